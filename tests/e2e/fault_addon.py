"""Test-only mitmdump script: makes the engine raise for hosts containing "explode".

Loaded beside the real add-on to induce an error inside decide(), so the test proves that an
engine failure fails closed instead of mitmproxy's default of forwarding the request.
"""

from webpolicy.engine.engine import Engine

_original = Engine.match


def _exploding_match(self, host, *args, **kwargs):
    if "explode" in host:
        raise RuntimeError("induced engine failure (test)")
    return _original(self, host, *args, **kwargs)


Engine.match = _exploding_match
