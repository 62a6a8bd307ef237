"""`webpolicy console`: the console in its own process, served by waitress.

Django's runserver is a development server; waitress is a small pure-Python production WSGI
server.  Behind a TLS-terminating reverse proxy (--https), waitress trusts that proxy's
X-Forwarded-For/-Proto headers (and only its), so Django sees HTTPS and axes the real
client address.
"""

from __future__ import annotations

from webpolicy.console.settings import ConsoleConfig, configure, shown_database


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"'{text}' is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(config: ConsoleConfig, host: str, port: int, trusted_proxy: str | None = None,
          threads: int = 4) -> None:
    configure(config)
    import waitress
    from django.core.wsgi import get_wsgi_application

    options: dict = {"host": host, "port": port, "threads": threads, "ident": "webpolicy-console"}
    if trusted_proxy:
        options.update(trusted_proxy=trusted_proxy, trusted_proxy_count=1,
                       trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"},
                       clear_untrusted_proxy_headers=True)
    from webpolicy.console.ingest import ingest
    from webpolicy.console.retention import Upkeep, purge_expired
    result = ingest(config.log_dirs)        # a first start indexes the backlog before serving
    if config.retention_days:
        purge_expired(config.retention_days)
    Upkeep(config.log_dirs, config.retention_days).start()   # expiry and erasure when idle
    logs = ", ".join(map(str, config.log_dirs))
    print(f"webpolicy console: http://{host}:{port}/ (log {logs}, {result.added} new "
          f"record(s) indexed; database {shown_database(config.database)})", flush=True)
    waitress.serve(get_wsgi_application(), **options)
