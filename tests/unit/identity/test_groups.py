"""clients.groups and directory: in policy.yaml, and groups choosing profiles in the engine:
users first, then the first listed group the user is in (nested groups already resolved by
the directory), then networks, then the default."""

from __future__ import annotations

import json

import pytest

from tests.unit.helpers import engine_from, policy_from
from webpolicy.identity.directory import SignedInUser
from webpolicy.policy.model import PolicyError, normalise_dn

POLICY = """\
version: "groups"
default_profile: learner
profiles:
  learner: {block: [adult]}
  staff: {block: [], on_error: allow}
  sixth: {block: [adult]}
clients:
  users: {alice: staff}
  groups:
    - {group: "CN=Staff, OU=Groups, DC=test", profile: staff}
    - {group: "cn=sixth,ou=groups,dc=test", profile: sixth}
  networks:
    - {cidr: 10.20.0.0/16, profile: staff}
lists:
  adult: {category: Pornography, severity: high, sources: [adult.txt]}
DIRECTORY
"""
DIRECTORY = """\
directory:
  url: ldap://127.0.0.1:3389
  base_dn: dc=test
  user_filter: "(&(uid={user})(!(employeeType=disabled)))"
  bind_dn: cn=reader,dc=test
  bind_password_env: WEBPOLICY_LDAP_PASSWORD
  cache_minutes: 0.5
"""
LISTS = {"adult.txt": "adult.test\n"}
STAFF = "cn=staff,ou=groups,dc=test"
SIXTH = "cn=sixth,ou=groups,dc=test"


def engine(tmp_path, directory: str = DIRECTORY):
    return engine_from(tmp_path, POLICY.replace("DIRECTORY\n", directory), LISTS)


def test_the_policy_reads_groups_and_the_directory(tmp_path):
    policy = policy_from(tmp_path, POLICY.replace("DIRECTORY\n", DIRECTORY), LISTS)
    assert [(g.group, g.profile) for g in policy.groups] == [(STAFF, "staff"), (SIXTH, "sixth")]
    settings = policy.directory
    assert settings.url == "ldap://127.0.0.1:3389" and settings.cache_minutes == 0.5
    assert settings.bind_password_env == "WEBPOLICY_LDAP_PASSWORD"
    assert settings.group_filter == "(member={dn})"


@pytest.mark.parametrize("directory, fragment", [
    ("directory: {url: ldap://dc1.college.ac.uk, base_dn: dc=test}\n", "in clear"),
    ("directory: {url: http://dc1, base_dn: dc=test}\n", "is not ldap://"),
    ("directory: {url: ldaps://dc1, base_dn: dc=test, user_filter: (uid=x)}\n", "{user}"),
    ("directory: {url: ldaps://dc1, base_dn: dc=test, bind_dn: cn=r}\n", "bind_password_env"),
    ("directory: {url: ldaps://dc1, base_dn: 'not a dn'}\n", "is not a DN"),
    ("directory: {url: ldaps://dc1, base_dn: dc=test, cache_minutes: -1}\n", "cache_minutes"),
    ("directory: {url: ldaps://dc1}\n", "missing required key 'base_dn'"),
])
def test_directory_mistakes_are_refused(tmp_path, directory, fragment):
    with pytest.raises(PolicyError) as info:
        policy_from(tmp_path, POLICY.replace("DIRECTORY\n", directory), LISTS)
    assert fragment in str(info.value)


def test_plain_ldap_is_accepted_with_start_tls(tmp_path):
    text = "directory: {url: ldap://dc1.college.ac.uk, base_dn: dc=test, start_tls: true}\n"
    assert policy_from(tmp_path, POLICY.replace("DIRECTORY\n", text), LISTS).directory.start_tls


def test_a_group_that_is_not_a_dn_is_refused(tmp_path):
    text = POLICY.replace("cn=sixth,ou=groups,dc=test", "sixth formers")
    with pytest.raises(PolicyError, match="is not a DN"):
        policy_from(tmp_path, text.replace("DIRECTORY\n", ""), LISTS)


def test_dns_compare_case_and_spacing_blind():
    assert normalise_dn("CN=Staff, OU=Groups,DC=Test") == "cn=staff,ou=groups,dc=test"


def test_groups_choose_profiles_after_users_before_networks(tmp_path):
    e = engine(tmp_path)
    name = lambda user, ip=None: (e.identify(user, ip)[0].profile.name, e.identify(user, ip)[1])
    assert name(SignedInUser("bob", {STAFF})) == ("staff", f"group {STAFF}")
    assert name(SignedInUser("bob", {SIXTH, STAFF})) == ("staff", f"group {STAFF}")  # first listed
    assert name(SignedInUser("sam", {SIXTH}), "10.20.0.9") == ("sixth", f"group {SIXTH}")
    assert name(SignedInUser("alice", {SIXTH})) == ("staff", "user")           # users first
    assert name(SignedInUser("lena", {"cn=other,dc=test"}), "10.20.0.9")[0] == "staff"
    assert name(SignedInUser("lena", set())) == ("learner", "default")
    assert name("bob") == ("learner", "default")       # a plain name has no groups


def test_changed_groups_are_not_answered_from_the_engine_cache(tmp_path):
    e = engine(tmp_path)
    assert e.identify(SignedInUser("bob", {STAFF}), None)[0].profile.name == "staff"
    assert e.identify(SignedInUser("bob", set()), None)[0].profile.name == "learner"


def test_check_with_groups_names_the_group_that_decided(tmp_path):
    from tests.unit.cli.test_main import webpolicy
    from tests.unit.helpers import write_policy
    path = write_policy(tmp_path, POLICY.replace("DIRECTORY\n", ""), LISTS)
    done = webpolicy("check", "http://adult.test/", "--policy", str(path), "--user", "bob",
                     "--group", "CN=Sixth,OU=Groups,DC=test", "--json")
    assert json.loads(done.stdout)["profile_reason"] == f"group {SIXTH}", done.stderr
    assert done.returncode == 4
    done = webpolicy("check", "http://adult.test/", "--policy", str(path), "--group", SIXTH)
    assert done.returncode == 2 and "--group needs --user" in done.stderr


KERBEROS = DIRECTORY + """\
  kerberos: {keytab: /etc/webpolicy/http.keytab, service: HTTP/gw.college.example, realm: COLLEGE.EXAMPLE}
"""


def test_the_policy_reads_kerberos(tmp_path):
    settings = policy_from(tmp_path, POLICY.replace("DIRECTORY\n", KERBEROS), LISTS).directory
    assert str(settings.kerberos.keytab) == "/etc/webpolicy/http.keytab"
    assert settings.kerberos.service == "HTTP/gw.college.example"
    assert settings.kerberos.realm == "COLLEGE.EXAMPLE"
    assert policy_from(tmp_path, POLICY.replace("DIRECTORY\n", DIRECTORY), LISTS) \
        .directory.kerberos is None


@pytest.mark.parametrize("kerberos, fragment", [
    ("{keytab: k, service: HTTP/gw.example@COLLEGE, realm: COLLEGE}", "is not HTTP/<host name>"),
    ("{keytab: k, service: host/gw.example, realm: COLLEGE}", "is not HTTP/<host name>"),
    ("{keytab: k, service: HTTP/gw.example, realm: 'COLLEGE EXAMPLE'}", "is not a Kerberos realm"),
    ("{keytab: k, service: HTTP/gw.example}", "missing required key 'realm'"),
    ("{keytab: k, service: HTTP/gw.example, realm: C, principal: x}", "principal"),
])
def test_kerberos_mistakes_are_refused(tmp_path, kerberos, fragment):
    text = DIRECTORY + f"  kerberos: {kerberos}\n"
    with pytest.raises(PolicyError) as info:
        policy_from(tmp_path, POLICY.replace("DIRECTORY\n", text), LISTS)
    assert fragment in str(info.value)


def test_kerberos_needs_a_directory_it_can_search_without_a_password(tmp_path):
    text = ("directory:\n  url: ldaps://dc1\n  base_dn: dc=test\n"
            "  user_dn_template: 'uid={user},dc=test'\n"
            "  kerberos: {keytab: k, service: HTTP/gw.example, realm: C}\n")
    with pytest.raises(PolicyError, match="needs bind_dn"):
        policy_from(tmp_path, POLICY.replace("DIRECTORY\n", text), LISTS)
