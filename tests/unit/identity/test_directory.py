"""The directory client's parts that need no server (tests/e2e/test_directory.py runs a real
OpenLDAP): the signed-in user type, nested group resolution, refusing what must not be asked."""

from __future__ import annotations

import pickle

import pytest

from webpolicy.identity.directory import (
    MAX_NESTING,
    Directory,
    DirectoryUnavailable,
    SignedInUser,
    plausible_name,
)
from webpolicy.policy.model import DirectorySettings

SETTINGS = DirectorySettings(url="ldap://127.0.0.1:1", base_dn="dc=test",
                             group_base_dn="ou=groups,dc=test", timeout_seconds=1)


def test_a_signed_in_user_is_its_name_with_its_groups():
    user = SignedInUser("alice", {"cn=staff,dc=test"})
    assert str(user) == "alice" and type(str(user)) is str
    assert user.groups == frozenset({"cn=staff,dc=test"})
    # the engine caches identify() per user: other groups are another key
    assert user != SignedInUser("alice", set())
    assert hash(user) != hash(SignedInUser("alice", set()))
    assert user == SignedInUser("alice", {"cn=staff,dc=test"})
    assert pickle.loads(pickle.dumps(user)).groups == user.groups
    # how the person was identified travels with the name, but chooses nothing
    ticket = SignedInUser("alice", {"cn=staff,dc=test"}, "kerberos")
    assert user.method == "login" and ticket.method == "kerberos"
    assert ticket == user and pickle.loads(pickle.dumps(ticket)).method == "kerberos"


def _directory_with(tree: dict[str, list[str]]) -> tuple[Directory, list[str]]:
    """A Directory whose group searches answer from `tree` (member DN -> group DNs)."""
    directory = Directory(SETTINGS, environ={})
    asked: list[str] = []

    def search(connection, base, query, limit):
        assert base == "ou=groups,dc=test"
        member = query.removeprefix("(member=").removesuffix(")")
        asked.append(member)
        return tree.get(member, [])
    directory._search = search
    return directory, asked


def test_groups_include_groups_of_groups():
    directory, _ = _directory_with({
        "uid=lena,ou=people,dc=test": ["cn=Year12,ou=groups,dc=test"],
        "cn=Year12,ou=groups,dc=test": ["cn=learners,ou=groups,dc=test"],
        "cn=learners,ou=groups,dc=test": ["cn=everyone,ou=groups,dc=test"],
    })
    assert directory._groups(None, "uid=lena,ou=people,dc=test") == {
        "cn=year12,ou=groups,dc=test", "cn=learners,ou=groups,dc=test",
        "cn=everyone,ou=groups,dc=test"}


def test_a_loop_of_groups_ends_and_depth_is_bounded():
    directory, asked = _directory_with({
        "uid=x,dc=test": ["cn=a,ou=groups,dc=test"],
        "cn=a,ou=groups,dc=test": ["cn=b,ou=groups,dc=test"],
        "cn=b,ou=groups,dc=test": ["cn=a,ou=groups,dc=test"],
    })
    assert directory._groups(None, "uid=x,dc=test") == {"cn=a,ou=groups,dc=test",
                                                        "cn=b,ou=groups,dc=test"}
    assert len(asked) == 3                              # each member asked about once
    chain = {f"cn=g{i},ou=groups,dc=test": [f"cn=g{i + 1},ou=groups,dc=test"]
             for i in range(50)}
    chain["uid=y,dc=test"] = ["cn=g0,ou=groups,dc=test"]
    directory, _ = _directory_with(chain)
    assert len(directory._groups(None, "uid=y,dc=test")) == MAX_NESTING


def test_a_dn_is_escaped_in_the_group_filter():
    directory, asked = _directory_with({})
    directory._groups(None, "cn=O*Brien\\, J (x),dc=test")
    assert asked == ["cn=O\\2aBrien\\5c, J \\28x\\29,dc=test"]


@pytest.mark.parametrize("user, password", [("alice", ""), ("", "pw"), ("a\nb", "pw"),
                                            ("x" * 300, "pw")])
def test_what_must_not_be_asked_is_refused_without_asking(user, password):
    # port 1 refuses connections: reaching the server would raise DirectoryUnavailable
    assert Directory(SETTINGS, environ={}).check(user, password) is None


def test_a_directory_that_cannot_be_reached_is_unavailable_not_a_no():
    with pytest.raises(DirectoryUnavailable):
        Directory(SETTINGS, environ={}).check("alice", "pw")


def test_plausible_names():
    assert plausible_name("alice") and plausible_name("j.o'brien@college.ac.uk")
    assert not plausible_name("") and not plausible_name("a\tb")
