"""identity/htpasswd.py: bcrypt and {SHA} entries, a changed file read again, an unreadable
file unavailable (fail closed), never a match for an unknown kind of entry; and the policy's
`directory: {htpasswd: FILE}`."""

from __future__ import annotations

import base64
import hashlib
import os

import bcrypt
import pytest

from tests.unit.helpers import policy_from
from tests.unit.identity.test_groups import LISTS, POLICY
from webpolicy.identity.directory import Directory, DirectoryUnavailable, SignedInUser
from webpolicy.identity.htpasswd import Htpasswd, login_checker
from webpolicy.policy.model import PolicyError


def sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


@pytest.fixture
def path(tmp_path):
    file = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"pw-sam", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    file.write_text(f"# comment\nsam:{hashed}\nold:{sha('pw-old')}\n"
                    f"md5:$apr1$abc$def\nbroken:$2y$10$short\n")
    return file


def test_bcrypt_and_sha_entries(path):
    checker = Htpasswd(path)
    assert checker.check("sam", "pw-sam") == SignedInUser("sam")
    assert checker.check("old", "pw-old") == SignedInUser("old")
    for user, password in (("sam", "wrong"), ("sam", ""), ("old", "pw-sam"), ("nobody", "x"),
                           ("md5", "anything"), ("broken", "x"), ("", "pw-sam"),
                           ("sam", "x" * 100)):
        assert checker.check(user, password) is None, (user, password)
    assert checker.lookup("sam") == SignedInUser("sam") and checker.lookup("nobody") is None


def test_an_edited_file_is_read_again_and_a_missing_one_fails_closed(path):
    checker = Htpasswd(path)
    assert checker.check("old", "pw-old")
    path.write_text(f"old:{sha('new-pw')}\n")
    os.utime(path, ns=(1, 1))                  # a different mtime even within a second
    assert checker.check("old", "pw-old") is None and checker.check("old", "new-pw")
    path.unlink()
    with pytest.raises(DirectoryUnavailable, match="cannot be read"):
        checker.check("old", "new-pw")


def test_the_policy_names_an_htpasswd_file_instead_of_a_directory(tmp_path, path):
    text = POLICY.replace("DIRECTORY\n", f"directory: {{htpasswd: {path}, cache_minutes: 30}}\n")
    settings = policy_from(tmp_path, text, LISTS).directory
    assert settings.htpasswd == path and settings.cache_minutes == 30 and settings.url == ""
    assert isinstance(login_checker(settings), Htpasswd)
    both = POLICY.replace("DIRECTORY\n", f"directory: {{htpasswd: {path}, url: ldaps://dc1}}\n")
    with pytest.raises(PolicyError, match="not used with directory.htpasswd"):
        policy_from(tmp_path, both, LISTS)
    ldap = policy_from(tmp_path, POLICY.replace(
        "DIRECTORY\n", "directory: {url: ldaps://dc1, base_dn: dc=test}\n"), LISTS).directory
    assert isinstance(login_checker(ldap), Directory)
