"""Issue #15: a statutory list's URLs stay on the gateway.

CTIRU/IWF lists are shared in confidence.  The log file on the gateway keeps the full record;
alerts (webhook bodies of every style, e-mail) and every `webpolicy report` output carry the
host and the list only.  Before confidential.py the webhook's JSON body carried the whole
record, and the alert text, CSV, JSON, HTML and table all showed the URL and the entry: each
test below failed then.
"""

from __future__ import annotations

import io
import json
from email import message_from_bytes

import pytest

from tests.unit.eventlog import NOW, make, write_log
from webpolicy.cli import main as cli
from webpolicy.policy.model import AlertSettings, EmailSettings
from webpolicy.safeguarding.alerts import Alert, AlertRules, email_message, plain_text, webhook_body
from webpolicy.safeguarding.htmlreport import write_html
from webpolicy.safeguarding.logstore import read_records
from webpolicy.safeguarding.report import write_csv, write_json, write_table

SECRET_PATH = "/terror/cell-7/manual"
STATUTORY = make(NOW, url=f"https://ctiru.test{SECRET_PATH}?id=9", list="ctiru",
                 category="Terrorist content (CTIRU)", severity="critical", statutory=True,
                 match="url", entry=f"ctiru.test{SECRET_PATH}")
ORDINARY = make(NOW, url="https://bet.test/slots/today", list="gambling", category="Gambling")
EMAIL = EmailSettings(host="smtp.test", sender="filter@college.test", to=("dsl@college.test",))


def assert_confidential(text: str) -> None:
    assert "cell-7" not in text and "/terror" not in text, text[:2000]
    assert "ctiru.test" in text                             # the host is still there


def exports(records: list[dict]) -> dict[str, str]:
    found = {}
    for name, emit in (("csv", lambda out: write_csv(records, {}, out)),
                       ("json", lambda out: write_json(records, {}, out)),
                       ("table", lambda out: write_table(records, {}, out, width=200)),
                       ("html", lambda out: write_html(records, {}, out, now=NOW))):
        out = io.StringIO()
        emit(out)
        found[name] = out.getvalue()
    return found


def statutory_alert() -> Alert:
    alert, _ = AlertRules(AlertSettings()).consider(STATUTORY)
    assert alert is not None and alert.trigger == "statutory"
    return alert


def test_the_log_file_on_the_gateway_keeps_the_full_address(tmp_path):
    write_log(tmp_path, [STATUTORY])
    [record] = read_records(tmp_path)
    assert record["url"].startswith("https://ctiru.test/terror/") and record["entry"]


@pytest.mark.parametrize("style", ["json", "slack", "teams"])
def test_webhook_bodies_carry_the_host_and_list_not_the_address(style):
    body = json.dumps(webhook_body(statutory_alert(), style, "College"))
    assert_confidential(body)
    assert "Terrorist content" in body


def test_the_json_webhook_record_withholds_url_and_entry_but_keeps_host_and_list():
    record = webhook_body(statutory_alert(), "json")["record"]
    assert record["url"] == "ctiru.test" and record["host"] == "ctiru.test"
    assert record["entry"] == "[withheld: statutory list]"
    assert record["list"] == "ctiru" and record["statutory"] is True


def test_email_alert_carries_the_host_not_the_address():
    alert = statutory_alert()
    message = message_from_bytes(email_message(alert, EMAIL, "College").as_bytes())
    assert_confidential(message.get_payload(decode=True).decode())
    assert_confidential(plain_text(alert))


@pytest.mark.parametrize("name", ["csv", "json", "table", "html"])
def test_report_exports_carry_the_host_not_the_address(name):
    assert_confidential(exports([STATUTORY])[name])


def test_ordinary_records_keep_their_url_in_exports():
    for name, text in exports([ORDINARY]).items():
        assert "bet.test/slots/today" in text, name


def test_report_command_csv_and_json_withhold_the_address(tmp_path, capsys):
    logs = write_log(tmp_path, [STATUTORY, ORDINARY])
    for option in ("--csv", "--json", None):
        args = ["report", "--log-dir", str(logs)] + ([option] if option else [])
        assert cli.main(args) == 0
        out, _ = capsys.readouterr()
        assert_confidential(out)
        assert "bet.test/slots/today" in out
