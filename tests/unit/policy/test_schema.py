"""policy.schema.json: the JSON Schema editors use to check policy.yaml as it is typed.

It must accept every policy the repository ships and the tests use, reject what the model
rejects for its shape (unknown keys, wrong types), and name exactly the keys the model reads:
a key added to model.py without the schema (or the other way round) fails here."""

from __future__ import annotations

import ast
import json

import jsonschema
import pytest
import yaml

from tests.e2e.conftest import POLICY as E2E_POLICY
from tests.e2e.test_directory import POLICY as DIRECTORY_POLICY
from tests.e2e.test_htpasswd import POLICY as HTPASSWD_POLICY
from tests.e2e.test_kerberos import SSO_POLICY
from tests.unit.helpers import ADDONS, REPO, policy_yaml
from tests.unit.policy.test_model import GOOD

SCHEMA = json.loads((REPO / "policy.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def errors(document: dict) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(document)]


def test_the_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", sorted(REPO.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_policy_is_valid(path):
    assert errors(yaml.safe_load(path.read_text())) == []


def test_the_shipped_policy_names_its_schema():
    first = (REPO / "policy.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=policy.schema.json"


@pytest.mark.parametrize("text", [
    GOOD,
    E2E_POLICY.format(staff_ip="127.0.0.2", learner_ip="127.0.0.3", metrics_port=9464),
    policy_yaml(learner={"block": ["adult"], "connect": "{block_ip_literals: true}"},
                staff={"block": [], "on_error": "allow"}, lists=["adult"]),
    DIRECTORY_POLICY.format(ldap_url="ldap://127.0.0.1:3389", service_dn="cn=reader,dc=test",
                            cache_minutes=0.1, metrics_port=9464),
    SSO_POLICY.format(ldap_url="ldap://127.0.0.1:3389", service_dn="cn=reader,dc=test",
                      cache_minutes=5, metrics_port=9464, keytab="/etc/webpolicy/http.keytab"),
    HTPASSWD_POLICY.format(htpasswd="/etc/webpolicy/htpasswd", metrics_port=9464),
], ids=["model", "e2e", "builder", "directory", "kerberos", "htpasswd"])
def test_the_test_policies_are_valid(text):
    assert errors(yaml.safe_load(text)) == []


@pytest.mark.parametrize("change, fragment", [
    (lambda p: p.update(verison="x"), "Additional properties"),
    (lambda p: p["profiles"]["learner"].update(on_error="maybe"), "is not one of"),
    (lambda p: p["lists"]["adult"].update(severity="urgent"), "is not one of"),
    (lambda p: p["lists"]["adult"].pop("sources"), "'sources' is a required property"),
    (lambda p: p["profiles"]["learner"].update(block="adult"), "is not of type 'array'"),
    (lambda p: p.update(logging={"retention_days": 0}), "less than the minimum"),
])
def test_shape_mistakes_are_refused(change, fragment):
    policy = yaml.safe_load(GOOD)
    change(policy)
    found = errors(policy)
    assert found and any(fragment in message for message in found), found


def _model_keys() -> set[str]:
    """Every key model.py reads: TOP_LEVEL_KEYS and the known keys of each Reader.mapping."""
    tree = ast.parse((ADDONS / "webpolicy/policy/model.py").read_text())
    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "TOP_LEVEL_KEYS"
                                                for t in node.targets):
            keys.update(ast.literal_eval(node.value))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "mapping" \
                and len(node.args) >= 3 and isinstance(node.args[2], ast.Tuple):
            keys.update(ast.literal_eval(node.args[2]))
    return keys


def _schema_keys(schema: dict) -> set[str]:
    keys: set[str] = set()
    for name, value in schema.get("properties", {}).items():
        keys.add(name)
        keys |= _schema_keys(value)
    for nested in ("additionalProperties", "items"):
        if isinstance(schema.get(nested), dict):
            keys |= _schema_keys(schema[nested])
    return keys


def test_the_schema_names_exactly_the_keys_the_model_reads():
    model, schema = _model_keys(), _schema_keys(SCHEMA)
    assert len(model) > 40
    assert model == schema, (f"only in model.py: {sorted(model - schema)}; "
                             f"only in the schema: {sorted(schema - model)}")


def test_url_sources_are_valid_and_http_is_refused():
    policy = yaml.safe_load(GOOD)
    policy["lists"]["adult"]["sources"] = [
        "adult.txt",
        {"url": "https://lists.example/adult.txt.gz", "refresh": "6h", "max_age": "1d",
         "max_shrink": 0.3, "ca": "provider-ca.pem", "token_env": "ADULT_TOKEN",
         "client_cert": "c.pem", "client_key": "c.key",
         "sha256_url": "https://lists.example/adult.txt.gz.sha256"}]
    assert errors(policy) == []
    policy["lists"]["adult"]["sources"] = [{"url": "http://lists.example/adult.txt"}]
    assert any("does not match" in message for message in errors(policy))
    policy["lists"]["adult"]["sources"] = [{"url": "https://x.example/a", "refresh": "often"}]
    assert errors(policy)
    policy["lists"]["adult"]["sources"] = [{"refresh": "6h"}]
    assert any("is not valid under any of the given schemas" in message
               for message in errors(policy))


def test_ut1_sources_and_downloads_are_valid_and_mixups_are_refused():
    policy = yaml.safe_load(GOOD)
    policy["downloads"] = {"proxy": "http://proxy.college.example:3128", "parallel": 2}
    policy["lists"]["adult"]["sources"] = [
        {"ut1": "https://dsi.ut-capitole.fr/blacklists/download/",
         "categories": ["adult", "mixed_adult"], "refresh": "24h", "proxy": "none"},
        {"ut1": "https://mirror.example/blacklists.tar.gz", "categories": ["adult"],
         "checksum": "required"},
        {"url": "https://lists.example/a.txt", "proxy": "env"}]
    assert errors(policy) == []
    for wrong in ({"ut1": "https://x.example/ut1/"},                      # no categories
                  {"ut1": "https://x.example/ut1/", "url": "https://x.example/a",
                   "categories": ["a"]},
                  {"url": "https://x.example/a", "categories": ["a"]},
                  {"ut1": "https://x.example/ut1", "categories": ["a"]},   # neither / nor .tar.gz
                  {"url": "https://x.example/a", "proxy": "proxy:3128"},
                  {"url": "https://x.example/a", "checksum": "required"},
                  {"ut1": "https://x.example/ut1/", "categories": ["a"], "checksum": "md5"}):
        policy["lists"]["adult"]["sources"] = [wrong]
        assert errors(policy), wrong
    policy["lists"]["adult"]["sources"] = ["adult.txt"]
    policy["downloads"] = {"parallel": 0}
    assert errors(policy)
