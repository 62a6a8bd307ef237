"""Statutory list entries stay on the gateway.

CTIRU and IWF lists are shared with a college in confidence: the URLs on them must not be
copied into a DSL's inbox, a chat channel, a CPOMS upload or an HTML report e-mailed around.
The local log keeps the full record (a DSL on the gateway can read it there); everything that
leaves it (alerts by webhook and e-mail, the CSV, JSON, HTML and table outputs of
`webpolicy report`) goes through `shareable`, which describes a statutory event by its host and
its list only, as the block page does.  A statutory record that gives no host keeps no address.
"""

from __future__ import annotations

from webpolicy.safeguarding.safetext import conform

WITHHELD = "[withheld: statutory list]"
CONFIDENTIAL_FIELDS = ("url", "entry")


def shareable(record: dict) -> dict:
    """The record as it may leave the gateway: for a statutory event the URL becomes the host
    and the matched entry is withheld; any other record is returned unchanged (not copied)."""
    record = conform(record)
    if not record.get("statutory"):
        return record
    out = dict(record)
    out["url"] = str(record.get("host") or "")
    if record.get("entry") is not None:
        out["entry"] = WITHHELD
    return out
