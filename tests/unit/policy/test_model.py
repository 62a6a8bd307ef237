"""policy.yaml validation: every problem named by file and line, nothing silently accepted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.unit.helpers import ADDONS, REPO
from webpolicy.policy.model import DigestSettings, PolicyError, load_policy, log_directory_problems

GOOD = """\
version: "2026-11-25"
default_profile: learner
profiles:
  learner:
    block: [ctiru, adult]
    log: [social]
  staff:
    block: [ctiru]
    log: [adult]
    on_error: allow
clients:
  users: {alice: staff}
  networks:
    - {cidr: 10.20.0.0/16, profile: staff}
lists:
  ctiru: {statutory: true, category: Terrorist content, severity: critical, format: urls, sources: [ctiru.txt]}
  adult: {category: Pornography, severity: high, sources: [adult.txt]}
  social: {category: Social networking, severity: low, sources: [social.txt]}
allow: [example.org/teaching/]
deny: []
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, text))
    return [str(p) for p in info.value.problems]


def test_good_policy_loads(tmp_path):
    policy = load_policy(write(tmp_path, GOOD))
    assert policy.version == "2026-11-25"
    assert policy.profiles["learner"].block == ("ctiru", "adult")
    assert policy.profiles["staff"].on_error == "allow"
    assert policy.lists["ctiru"].statutory
    assert policy.lists["adult"].sources == (tmp_path / "adult.txt",)
    assert str(policy.networks[0].network) == "10.20.0.0/16"


def test_the_shipped_policy_loads():
    policy = load_policy(REPO / "policy.yaml")
    assert policy.default_profile == "learner"
    assert policy.lists["ctiru"].statutory


def test_yaml_syntax_error_names_the_line(tmp_path):
    found = problems(tmp_path, GOOD.replace("  learner:\n", "  learner:\n   - [\n", 1))
    assert found and found[0].startswith(f"{tmp_path / 'policy.yaml'}:")
    assert "YAML syntax error" in found[0]


def test_unknown_key_with_suggestion_and_line(tmp_path):
    found = problems(tmp_path, GOOD.replace("lists:\n", "lsts: {}\nlists:\n"))
    assert any(p.endswith("unknown key 'lsts' (did you mean 'lists'?)") for p in found), found
    line = GOOD.replace("lists:\n", "lsts: {}\nlists:\n").splitlines().index("lsts: {}") + 1
    assert any(f"policy.yaml:{line}:" in p for p in found)


def test_unknown_list_and_profile_names(tmp_path):
    text = GOOD.replace("block: [ctiru, adult]", "block: [ctiru, adlt]")
    text = text.replace("{cidr: 10.20.0.0/16, profile: staff}", "{cidr: 10.20.0.0/16, profile: stuff}")
    found = problems(tmp_path, text)
    assert any("unknown list 'adlt' (did you mean 'adult'?)" in p for p in found)
    assert any("unknown profile 'stuff' (did you mean 'staff'?)" in p for p in found)


def test_statutory_list_cannot_be_only_logged(tmp_path):
    found = problems(tmp_path, GOOD.replace("log: [adult]", "log: [adult, ctiru]"))
    assert any("'ctiru' is a statutory list" in p for p in found)


def test_default_profile_must_block(tmp_path):
    found = problems(tmp_path, GOOD.replace("default_profile: learner", "default_profile: staff"))
    assert any("default_profile: 'staff' has on_error: allow" in p for p in found)


def test_duplicate_keys_are_errors(tmp_path):
    found = problems(tmp_path, GOOD + "deny: [x.com]\n")
    assert any("key 'deny' appears twice" in p for p in found)


def test_bad_values(tmp_path):
    text = GOOD.replace("severity: high", "severity: huge").replace("10.20.0.0/16", "10.20.0.0/99")
    found = problems(tmp_path, text)
    assert any("'huge' is not one of low, medium, high, critical" in p for p in found)
    assert any("'10.20.0.0/99' is not a network" in p for p in found)


def test_missing_required_keys(tmp_path):
    found = problems(tmp_path, "version: x\n")
    assert any("missing required key 'profiles'" in p for p in found)
    assert any("missing required key 'lists'" in p for p in found)


def test_empty_file(tmp_path):
    assert problems(tmp_path, "")


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("block: [ctiru, adult]", "block: [ctiru, nope]").replace(
        "severity: low", "severity: tiny")
    assert len(problems(tmp_path, text)) >= 2


def test_files_lists_every_dependency(tmp_path):
    policy = load_policy(write(tmp_path, GOOD))
    assert set(policy.files()) == {tmp_path / n for n in
                                   ("policy.yaml", "ctiru.txt", "adult.txt", "social.txt")}


# -- logging.directory on this machine (issue #15) ----------------------------------------
# An unusable log directory used to pass validation and then lose every record at run time.
# log_directory_problems is new; the CLI tests in tests/unit/cli/test_main.py show validate
# and run refusing such a policy (they passed it before).


def with_log_directory(tmp_path: Path, directory: Path | str) -> Path:
    return write(tmp_path, GOOD + f"logging:\n  retention_days: 30\n  directory: {directory}\n")


def directory_problems(tmp_path: Path, directory: Path | str) -> list[str]:
    return [str(p) for p in log_directory_problems(load_policy(with_log_directory(tmp_path,
                                                                                  directory)))]


def test_a_usable_or_creatable_log_directory_is_fine(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert directory_problems(tmp_path, private / "var" / "logs") == []
    assert directory_problems(tmp_path, "logs") == []        # relative to the policy


def test_a_file_in_the_way_is_an_error_with_file_and_line(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    found = directory_problems(tmp_path, blocker)
    line = GOOD.count("\n") + 3                              # logging:, retention_days:, directory:
    assert found == [f"{tmp_path / 'policy.yaml'}:{line}: logging.directory: {blocker} is not a "
                     "directory (a file is in the way), so every record would be lost: remove "
                     "it, or name a directory such as /var/log/webpolicy"]
    found = directory_problems(tmp_path, blocker / "sub")
    assert len(found) == 1 and "cannot be created" in found[0] and f":{line}:" in found[0]


def test_a_world_writable_holder_is_an_error_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    [found] = log_directory_problems(load_policy(with_log_directory(tmp_path, shared / "logs")))
    assert not found.warning and "writable by every account" in found.message
    shared.chmod(0o1777)
    [found] = log_directory_problems(load_policy(with_log_directory(tmp_path, shared / "logs")))
    assert found.warning and "like /tmp" in str(found)


NOT_WRITABLE = textwrap.dedent("""
    import os, sys
    from webpolicy.policy.model import load_policy, log_directory_problems
    policy = load_policy(sys.argv[1])          # read as root, checked as nobody
    os.setgid(65534)
    os.setuid(65534)
    for problem in log_directory_problems(policy):
        print(problem)
""")


@pytest.fixture
def open_tmp():
    """A directory `nobody` can enter (pytest's own tmp_path is under a 0700 root directory)."""
    directory = Path(tempfile.mkdtemp(prefix="webpolicy-logdir-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_a_directory_the_account_cannot_write_is_an_error(open_tmp):
    tmp_path = open_tmp
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)                      # root's: nobody may enter, not write
    policy = with_log_directory(tmp_path, logs)
    policy.chmod(0o644)
    done = subprocess.run([sys.executable, "-c", NOT_WRITABLE, str(policy)], text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ADDONS)},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{logs} is not writable by nobody" in done.stdout
    assert "chown nobody" in done.stdout
    missing = tmp_path / "root-only" / "logs"
    (tmp_path / "root-only").mkdir(mode=0o755)
    policy = with_log_directory(tmp_path, missing)
    done = subprocess.run([sys.executable, "-c", NOT_WRITABLE, str(policy)], text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ADDONS)},
                          timeout=60)
    assert "nobody cannot create it" in done.stdout, done.stdout + done.stderr
# -- URL sources (lists/remote.py downloads them) ----------------------------------------------

REMOTE = GOOD.replace(
    "adult: {category: Pornography, severity: high, sources: [adult.txt]}",
    "adult:\n"
    "    category: Pornography\n"
    "    severity: high\n"
    "    sources:\n"
    "      - adult.txt\n"
    "      - {url: https://lists.example/adult.txt.gz, refresh: 6h, ca: provider-ca.pem,\n"
    "         token_env: ADULT_TOKEN, max_shrink: 0.3, sha256_url: https://lists.example/s}\n"
    "      - {url: https://other.example/adult.txt, refresh: 90m, max_age: 1d,\n"
    "         client_cert: c.pem, client_key: c.key}")


def test_a_url_source_maps_to_a_stable_last_good_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBPOLICY_SOURCES_DIR", raising=False)
    policy = load_policy(write(tmp_path, REMOTE))
    spec = policy.lists["adult"]
    first, second = spec.remote
    assert first.url == "https://lists.example/adult.txt.gz" and first.list == "adult"
    assert first.refresh == 6 * 3600 and first.max_age == 24 * 3600
    assert first.max_shrink == 0.3 and first.token_env == "ADULT_TOKEN"
    assert first.ca == tmp_path / "provider-ca.pem" and first.sha256_url == "https://lists.example/s"
    assert first.format == "auto" and not first.statutory and first.line == 22
    assert second.refresh == 5400 and second.max_age == 86400 and second.max_shrink == 0.5
    assert second.client_cert == tmp_path / "c.pem" and second.client_key == tmp_path / "c.key"
    assert first.path.parent == tmp_path / ".webpolicy-sources" / "adult"
    assert first.path != second.path and first.path.suffix == ".txt"
    assert spec.sources == (tmp_path / "adult.txt", first.path, second.path)
    assert first.path in policy.files(), "the reloader watches the last good copy"
    assert policy.remote_sources() == [first, second]
    assert load_policy(write(tmp_path, REMOTE)).lists["adult"].remote[0].path == first.path
    monkeypatch.setenv("WEBPOLICY_SOURCES_DIR", str(tmp_path / "state"))
    moved = load_policy(write(tmp_path, REMOTE)).lists["adult"].remote[0]
    assert moved.path.parent == tmp_path / "state" / "adult"


@pytest.mark.parametrize("source, message", [
    ("{url: http://lists.example/a.txt}", "is not an https:// URL; list sources are downloaded "
                                          "over HTTPS only"),
    ("{url: https://lists.example/a.txt, refresh: often}", "is not a duration"),
    ("{url: https://lists.example/a.txt, max_shrink: 2}", "max_shrink: expected a fraction"),
    ("{url: https://lists.example/a.txt, client_cert: c.pem}", "client_cert and client_key go "
                                                               "together"),
    ("{url: https://lists.example/a.txt, sha256_url: http://x/s}", "sha256_url"),
    ("{refresh: 6h}", "names either url: (one list file) or ut1: (UT1 categories)"),
    ("{url: https://l.example/a.txt, ut1: https://l.example/}", "names either url:"),
    ("{ut1: https://l.example/ut1/}", "missing required key 'categories'"),
    ("{ut1: https://l.example/ut1, categories: [adult]}", "neither UT1's download directory"),
    ("{ut1: http://l.example/ut1/, categories: [adult]}", "is not an https:// URL"),
    ("{ut1: https://l.example/ut1/, categories: [adult, adult]}", "'adult' appears twice"),
    ("{ut1: https://l.example/ut1/, categories: ['../x']}", "is not a UT1 category name"),
    ("{ut1: https://l.example/ut1/, categories: [a], sha256_url: https://l.example/s}",
     "not for a ut1: source"),
    ("{url: https://l.example/a.txt, categories: [adult]}", "only for a ut1: source"),
    ("{url: https://l.example/a.txt, checksum: required}", "checksum: only for a ut1: source"),
    ("{ut1: https://l.example/ut1/, categories: [a], checksum: md5}",
     "'md5' is not one of auto, required"),
    ("{url: https://l.example/a.txt, proxy: proxy.example:3128}", "is not a proxy"),
    ("{url: https://l.example/a.txt, proxy: 'http://u:pw@proxy.example:3128'}",
     "a password does not belong in policy.yaml"),
    ("{url: https://lists.example/a.txt, refesh: 6h}", "did you mean 'refresh'"),
])
def test_url_source_mistakes_name_file_and_line(tmp_path, source, message):
    text = GOOD.replace("sources: [adult.txt]}", f"sources: [adult.txt, {source}]}}")
    found = problems(tmp_path, text)
    assert any(message in p and ":17:" in p for p in found), found


def test_a_ut1_list_cannot_be_a_url(tmp_path):
    text = GOOD.replace("sources: [adult.txt]}", "format: ut1, sources: "
                                                 "[{url: https://x.example/adult.tar.gz}]}")
    assert any("format ut1 needs a UT1 category directory" in p for p in problems(tmp_path, text))


UT1_SOURCES = GOOD.replace(
    "adult: {category: Pornography, severity: high, sources: [adult.txt]}",
    "adult:\n"
    "    category: Pornography\n"
    "    sources:\n"
    "      - {ut1: 'https://dsi.ut-capitole.fr/blacklists/download/', categories: [adult,\n"
    "         mixed_adult], refresh: 24h}\n"
    "      - {ut1: 'https://mirror.example/blacklists.tar.gz', categories: [adult],\n"
    "         proxy: none, checksum: required}\n"
    "      - {url: https://lists.example/a.txt, proxy: 'http://[::1]:3129'}\n"
    "      - {url: https://lists.example/b.txt, proxy: env}").replace(
    "\nallow:", "\ndownloads: {proxy: 'http://proxy.college.example:3128', parallel: 2}\nallow:", 1)


def test_ut1_sources_are_category_directories_with_a_proxy(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBPOLICY_SOURCES_DIR", raising=False)
    policy = load_policy(write(tmp_path, UT1_SOURCES))
    per_category, archive, direct, env = policy.lists["adult"].remote
    assert per_category.ut1_categories == ("adult", "mixed_adult") and per_category.is_ut1
    assert per_category.refresh == 24 * 3600 and per_category.path.suffix == ".ut1"
    assert per_category.copies() == (per_category.path / "adult",
                                     per_category.path / "mixed_adult")
    assert policy.lists["adult"].sources[:3] == (*per_category.copies(), archive.path / "adult")
    assert per_category.proxy == "http://proxy.college.example:3128", "downloads.proxy"
    assert archive.proxy == "" and direct.proxy == "http://[::1]:3129" and env.proxy == "env"
    assert per_category.checksum == "auto" and archive.checksum == "required"
    assert not direct.is_ut1 and direct.copies() == (direct.path,)
    assert policy.downloads.parallel == 2
    assert set(per_category.copies()) <= set(policy.files())
    other = load_policy(write(tmp_path, UT1_SOURCES.replace("mixed_adult]", "gambling]")))
    assert other.lists["adult"].remote[0].path != per_category.path, "another set, another copy"


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("parallel: 2", "parallel: 0"), "downloads.parallel: 0 is out of range"),
    (lambda t: t.replace("parallel: 2", "paralel: 2"), "did you mean 'parallel'"),
    (lambda t: t.replace("categories: [adult],", "categories: [adult], format: domains,"),
     "unknown key 'format'"),
    (lambda t: t.replace("    category: Pornography\n", "    category: Pornography\n"
                                                       "    format: domains\n", 1),
     "the list's format must be ut1 or auto, not domains"),
])
def test_ut1_and_download_mistakes_are_errors(tmp_path, change, message):
    found = problems(tmp_path, change(UT1_SOURCES))
    assert any(message in p for p in found), found


def test_the_shipped_policys_commented_url_example_is_valid(tmp_path, monkeypatch):
    """policy.yaml ships a URL source commented out (no network dependency); uncommented,
    it must load as written."""
    monkeypatch.delenv("WEBPOLICY_SOURCES_DIR", raising=False)
    shipped = (REPO / "policy.yaml").read_text()
    lines = shipped.splitlines()
    start = lines.index("  # phishing:")
    example = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        example.append("  " + line[4:])
    text = shipped.replace("\nallow:", "\n" + "\n".join(example) + "\nallow:", 1)
    policy = load_policy(write(tmp_path, text))
    source = policy.lists["phishing"].remote[0]
    assert source.url == "https://lists.example.net/phishing.txt.gz"
    assert source.refresh == 6 * 3600 and source.token_env == "PHISHING_LIST_TOKEN"
    assert load_policy(REPO / "policy.yaml").remote_sources() == []


def test_console_url_reaches_the_alert_settings_and_must_be_http(tmp_path):
    policy = load_policy(write(tmp_path, GOOD + "console: {url: 'https://console.test/'}\n"))
    assert policy.alerts.console_url == "https://console.test/"
    found = problems(tmp_path, GOOD + "console: {url: 'console.test'}\n")
    assert any("console.url: 'console.test' is not an http(s) address" in p for p in found)


def test_console_digest_needs_alerts_email_and_console_url(tmp_path):
    email = "alerts: {email: {host: smtp.test, from: f@test, to: [a@test]}}\n"
    policy = load_policy(write(tmp_path, GOOD + email + "console: {url: 'https://console.test/', "
                                                        "digest: {period: day}}\n"))
    assert policy.alerts.digest == DigestSettings(period="day", to=())
    found = problems(tmp_path, GOOD + "console: {url: 'https://c.test/', digest: {}}\n")
    assert any("console.digest: digests are sent through the SMTP server of alerts.email"
               in p for p in found)
    found = problems(tmp_path, GOOD + email + "console: {digest: {to: [d@test]}}\n")
    assert any("console.digest: the digest links to the console; set console.url" in p
               for p in found)
    found = problems(tmp_path, GOOD + email + "console: {url: 'https://c.test/', "
                                              "digest: {period: month}}\n")
    assert any("console.digest.period" in p for p in found)


# -- sign_in: the gateway's sign-in page (issue #17) ----------------------------------------

DIRECTORY = 'directory: {url: "ldap://127.0.0.1:389", base_dn: "dc=test"}\n'


def test_sign_in_reads_networks_and_durations(tmp_path):
    policy = load_policy(write(tmp_path, GOOD + DIRECTORY + "sign_in:\n  networks: "
                               "[10.30.0.0/16, 'fd00::/64']\n  idle: 20m\n  max: 4h\n"
                               "  transparent: false\n"))
    settings = policy.sign_in
    assert [str(n) for n in settings.networks] == ["10.30.0.0/16", "fd00::/64"]
    assert (settings.idle, settings.max, settings.transparent) == (1200.0, 14400.0, False)
    defaults = load_policy(write(tmp_path, GOOD + DIRECTORY + "sign_in: {}\n")).sign_in
    assert (defaults.idle, defaults.max, defaults.transparent) == (1800.0, 28800.0, True)
    assert load_policy(write(tmp_path, GOOD)).sign_in is None


@pytest.mark.parametrize("text, fragment", [
    ("sign_in: {networks: [10.30.0.0/16]}\n", "sign_in: needs directory:"),
    (DIRECTORY + "sign_in: {networks: [library]}\n", "'library' is not a network"),
    (DIRECTORY + "sign_in: {idle: soon}\n", "sign_in.idle: 'soon' is not a duration"),
    (DIRECTORY + "sign_in: {idle: 9h, max: 8h}\n", "sign_in.idle: longer than sign_in.max"),
    (DIRECTORY + "sign_in: {page: true}\n", "page"),
])
def test_sign_in_mistakes_name_the_line(tmp_path, text, fragment):
    found = problems(tmp_path, GOOD + text)
    assert any(fragment in p and ":" in p.split(" ")[0] for p in found), found


def test_the_shipped_policys_commented_ut1_and_downloads_examples_are_valid(tmp_path,
                                                                            monkeypatch):
    monkeypatch.delenv("WEBPOLICY_SOURCES_DIR", raising=False)
    shipped = (REPO / "policy.yaml").read_text()
    lines = shipped.splitlines()
    start = lines.index("  # dating:")
    example = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        example.append("  " + line[4:])
    downloads = next(line for line in lines if line.startswith("# downloads: "))
    text = shipped.replace("\nallow:", "\n" + "\n".join(example) + "\nallow:", 1)
    text = text.replace(downloads, downloads[2:], 1)
    policy = load_policy(write(tmp_path, text))
    source = policy.lists["dating"].remote[0]
    assert source.url == "https://dsi.ut-capitole.fr/blacklists/download/"
    assert source.ut1_categories == ("dating",) and source.refresh == 24 * 3600
    assert source.proxy == "http://proxy.college.example:3128"
    assert policy.downloads.parallel == 4


def test_console_database_sqlite_by_default_postgresql_by_url(tmp_path):
    assert load_policy(write(tmp_path, GOOD)).console.database == ""     # SQLite beside the log
    policy = load_policy(write(tmp_path, GOOD + "console: {database: state/console.sqlite3}\n"))
    assert policy.console.database == str(tmp_path / "state" / "console.sqlite3")
    assert not policy.console.postgresql
    url = "postgresql://webpolicy@db.test:5432/console?sslmode=verify-full"
    policy = load_policy(write(tmp_path, GOOD + f"console: {{database: '{url}', "
                               "database_password_file: db.password}\n"))
    assert policy.console.postgresql and policy.console.database == url
    assert policy.console.database_password_file == tmp_path / "db.password"


@pytest.mark.parametrize(("console", "message"), [
    ("{database: 'postgresql://webpolicy:hunter2@db.test/console'}",
     "has a password: never put it in policy.yaml"),
    ("{database: 'postgresql://webpolicy@db.test'}", "names no database"),
    ("{database: 'mysql://webpolicy@db.test/console'}", "is neither a postgresql:// URL"),
    ("{database_password_env: DB_PASSWORD}", "only for a postgresql:// database"),
    ("{database: 'postgresql://w@db.test/c', database_password_env: X, "
     "database_password_file: f}", "not both"),
])
def test_console_database_mistakes_are_named(tmp_path, console, message):
    found = problems(tmp_path, GOOD + f"console: {console}\n")
    assert any(message in p for p in found), found
    assert not any("hunter2" in p for p in found)         # the password is not repeated
