"""Request-derived text made safe to store, send and show: no record is ever lost to its text.

mitmproxy hands the add-on header values and paths decoded with `surrogateescape`, so a byte
that is not UTF-8 (a Latin-1 `ë` in a User-Agent) arrives as a lone surrogate (U+DCEB).  Such a
string cannot be encoded as UTF-8: before this module the log writer dropped the whole record,
and every export and alert raised on it.  A learner who controls a header must never be able
to make their attempt vanish, nor to break a DSL's report or script their terminal, so every
string that reaches the log, an alert or an export goes through `clean_text` first:

  * a byte that was not UTF-8 (U+DC80..U+DCFF)        -> `\\xNN` (the byte, in hex);
  * any other lone surrogate (U+D800..U+DFFF)          -> `\\uNNNN`;
  * C0 controls and DEL (newline, ESC, NUL ...)        -> `\\xNN`;
  * C1 controls and U+2028/U+2029 (line separators)    -> `\\uNNNN`;
  * longer than the field's limit                      -> cut to it, ending `...[N more characters]`.

The escaped form keeps the evidence readable (`Zo\\xeb` rather than a replacement character)
and makes every record exactly one valid UTF-8 JSON line.  A literal backslash sent by the
client is kept as it is, so `\\xNN` in a field means "this byte, or these characters".
"""

from __future__ import annotations

import math
import re
from typing import Any

DEFAULT_LIMIT = 2048          # characters: a real User-Agent is 100-400
FIELD_LIMITS = {"url": 8192, "search_term": 200}
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_MAX_DEPTH = 4                # records nest one level (watchlist); deeper is not a record


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:                 # surrogateescape: the byte itself
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def clean_text(text: str, limit: int | None = DEFAULT_LIMIT) -> str:
    """`text` with unencodable and control characters escaped, cut at `limit` characters
    (None: no limit).  Cheap for the usual clean, short string: one regex search."""
    if _UNSAFE.search(text):
        text = _UNSAFE.sub(_escape, text)
    if limit is not None and len(text) > limit:
        text = _cut(text, limit)
    return text


def encodable(text: str) -> str:
    """`text` with only its lone surrogates escaped (as clean_text does): for a page, which
    shows every other character as it is, HTML-escaped."""
    if text.isascii():
        return text                              # the usual case
    return _SURROGATE.sub(_escape, text)


_SURROGATE = re.compile("[\ud800-\udfff]")
_PARTIAL_ESCAPE = re.compile(r"\\(?:x[0-9a-f]?|u[0-9a-f]{0,3})?$")


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters, the last of them saying how many were cut (the marker's
    own length depends on that number, hence the loop); an escape is not cut in half."""
    if limit < 32:
        return text[:limit]
    keep = limit
    while True:
        marker = f"...[{len(text) - keep} more characters]"
        if keep + len(marker) <= limit:
            break
        keep = limit - len(marker)
    kept = _PARTIAL_ESCAPE.sub("", text[:keep])
    return f"{kept}...[{len(text) - len(kept)} more characters]"


def clean_value(value: Any, limit: int | None = DEFAULT_LIMIT, depth: int = 0) -> Any:
    """A JSON-ready copy of `value`: strings cleaned, dict keys too, anything that is not
    JSON (bytes, objects, NaN) turned into cleaned text rather than failing the record."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < _MAX_DEPTH and isinstance(value, dict):
        return {clean_text(str(k), 256): clean_value(v, limit, depth + 1) for k, v in value.items()}
    if depth < _MAX_DEPTH and isinstance(value, list | tuple):
        return [clean_value(v, limit, depth + 1) for v in value]
    if isinstance(value, bytes):
        return clean_text(value.decode("utf-8", "surrogateescape"), limit)
    return clean_text(repr(value), limit)


def clean_record(record: dict) -> dict:
    """The record safe to encode as UTF-8 JSON on one line, each field within its limit (the
    URL may be longer than the rest): the record itself when it already is (the usual case,
    checked with one regex search, as make_record runs on the event loop), else a cleaned
    copy."""
    if _is_clean(record):
        return record
    return {clean_text(str(key), 256): clean_value(value, FIELD_LIMITS.get(key, DEFAULT_LIMIT))
            for key, value in record.items()}


def _is_clean(record: dict, depth: int = 0) -> bool:
    texts: list[str] = []
    for key, value in record.items():
        if type(key) is not str or len(key) > 256:
            return False
        texts.append(key)
        kind = type(value)
        if kind is str:
            if len(value) > FIELD_LIMITS.get(key, DEFAULT_LIMIT):
                return False
            texts.append(value)
        elif kind is dict:
            if depth or not _is_clean(value, depth + 1):
                return False
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif value is not None and kind is not bool and kind is not int:
            return False
    return _UNSAFE.search(" ".join(texts)) is None


def display(value: Any, limit: int | None = None) -> str:
    """Any value as text for a report cell, an alert line or a terminal: never raises and
    never carries a control character (an ESC sequence cannot restyle the DSL's terminal)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(clean_value(value, limit))
    return clean_text(value, limit)


def conform(record: dict) -> dict:
    """The record in the shape readers expect, whatever a log line held: `watchlist` a mapping
    or None (other content kept as its term), and no list or mapping where text belongs, so
    reports and alerts can filter and sort any record.  Returns the record itself when it
    already has that shape (the usual case: no copy)."""
    if _conforms(record):
        return record
    out = {key: (display(value) if isinstance(value, dict | list) else value)
           for key, value in record.items() if key != "watchlist"}
    watch = record.get("watchlist")
    if watch is not None and "watchlist" in record:
        if not isinstance(watch, dict):
            watch = {"term": watch}
        out["watchlist"] = {key: (display(value) if isinstance(value, dict | list) else value)
                            for key, value in watch.items()}
    elif "watchlist" in record:
        out["watchlist"] = None
    return out


def _conforms(record: dict) -> bool:
    for key, value in record.items():
        if key == "watchlist":
            if value is not None and (not isinstance(value, dict) or any(
                    isinstance(v, dict | list) for v in value.values())):
                return False
        elif isinstance(value, dict | list):
            return False
    return True
