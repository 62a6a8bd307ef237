"""webpolicy: a web-filtering gateway for education providers, as a mitmproxy add-on."""

__version__ = "0.1.0"
