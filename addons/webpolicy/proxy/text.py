"""Text taken from request bytes, made safe to put in a page or a record.

mitmproxy decodes header bytes that are not UTF-8 as lone surrogates (`surrogateescape`),
which any later `.encode()` refuses: a block page or a log line built from them raised, and
a raised hook forwards the request.  Control characters in a record could forge the lines of
a report.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with lone surrogates and non-printable characters written as escapes (\\udcff,
    \\x01, \\u200d): always encodable, one line, and shows what was hidden."""
    if text.isascii() and text.isprintable():
        return text                                  # the usual case: ~50 ns
    return "".join(c if c.isprintable() else repr(c)[1:-1]
                   for c in text.encode("utf-8", "backslashreplace").decode("utf-8"))


def encodable(text: str) -> str:
    """`text` with only its lone surrogates (bytes that were not UTF-8) written as escapes:
    for a page, which shows every other character as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
