"""Django settings built from policy.yaml and the command line, not from a settings module.

The console has one deployment shape (beside the gateway, reading its log), so its settings
are computed: the log directory from policy.yaml, the SQLite database and the secret key
beside that directory, or the centre's PostgreSQL server when policy.yaml's
`console.database` names one (the same code runs on both; its password comes from a file or
an environment variable named in the policy, never from policy.yaml itself).  The secret key is generated on first start into a 0600 file that is
never part of the repository; sessions, CSRF tokens and API token digests depend on it.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.management.utils import get_random_secret_key
from django.utils.csp import CSP

PACKAGE = Path(__file__).resolve().parent
DATABASE_FILE = "webpolicy-console.sqlite3"
SECRET_FILE = "webpolicy-console.secret"


@dataclass
class ConsoleConfig:
    """Where the console's state lives and how it is published."""

    log_dirs: list[Path]                # one per gateway; the first holds the default database
    database: Path | str                # an SQLite file, or a postgresql:// URL
    secret_file: Path
    database_password: str | None = field(default=None, repr=False)
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost"])
    https: bool = False                 # behind a TLS-terminating reverse proxy
    trusted_origins: list[str] = field(default_factory=list)
    login_failure_limit: int = 5
    lockout_minutes: int = 15
    retention_days: int | None = None   # logging.retention_days: the index expires as the log

    @property
    def log_dir(self) -> Path:
        """The first (or only) log directory: the SQLite file and secret key sit beside it."""
        return self.log_dirs[0]


def config_for(log_dirs: Path | list[Path], database: Path | str | None = None,
               **options) -> ConsoleConfig:
    """Defaults beside the log directory: `logs/` -> `webpolicy-console.sqlite3` and
    `webpolicy-console.secret` in the directory holding `logs/`, outside the log directory
    so that the proxy's retention never touches them.  A database file given elsewhere (the
    systemd layout: /var/lib/webpolicy-console/) has the secret key beside it; with a
    postgresql:// URL the key stays beside the log directory.  With several log directories
    (one per gateway: console.log_dirs) "the log directory" here is the first."""
    if isinstance(log_dirs, (str, Path)):
        log_dirs = [log_dirs]
    # the same directory twice would be followed twice (and is one gateway)
    log_dirs = list(dict.fromkeys(Path(d).resolve() for d in log_dirs))
    home = log_dirs[0].parent
    if isinstance(database, str) and is_postgresql(database):
        return ConsoleConfig(log_dirs=log_dirs, database=database,
                             secret_file=home / SECRET_FILE, **options)
    database = Path(database or home / DATABASE_FILE)
    return ConsoleConfig(log_dirs=log_dirs, database=database,
                         secret_file=database.parent / SECRET_FILE, **options)


def is_postgresql(database: Path | str) -> bool:
    return isinstance(database, str) and database.startswith(("postgresql://", "postgres://"))


def shown_database(database: Path | str) -> str:
    """The database for messages: a file, or the URL (which never holds a password)."""
    return str(database)


def database_settings(config: ConsoleConfig) -> dict:
    """Django's DATABASES["default"]: SQLite, or PostgreSQL through psycopg 3."""
    if not is_postgresql(config.database):
        config.database.parent.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(config.database),
            # the ingest thread of one request and the writes of another share the file; a
            # 64 MB page cache keeps the indexes of a million events in memory while ingesting
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA cache_size=-65536;"},
        }
    url = urlsplit(config.database)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")),
        "USER": unquote(url.username or ""),
        "PASSWORD": config.database_password or "",   # else libpq's ~/.pgpass or PGPASSWORD
        "HOST": unquote(url.hostname or ""),          # empty: the local socket
        "PORT": str(url.port or ""),
        # libpq's own parameters (sslmode, sslrootcert, connect_timeout ...) as written
        "OPTIONS": dict(parse_qsl(url.query)),
        # one connection per server thread, kept between requests and checked before reuse
        "CONN_MAX_AGE": 300,
        "CONN_HEALTH_CHECKS": True,
    }


def secret_key(path: Path) -> str:
    """The key from `path`, generated (0600, created exclusively) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:                  # another process (users add) made it just now
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(get_random_secret_key() + "\n")
    return path.read_text().strip()


def time_zone() -> str:
    """Pages show UK time (as reports show local time), or $TZ when it names a zone."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        zoneinfo.ZoneInfo(name)
        return name
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return "Europe/London"


def django_settings(config: ConsoleConfig) -> dict:
    """Everything Django needs, as keyword arguments for settings.configure()."""
    return {
        "DEBUG": False,
        "SECRET_KEY": secret_key(config.secret_file),
        "ALLOWED_HOSTS": list(config.allowed_hosts),
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "axes",
            "webpolicy.console",
        ],
        "MIDDLEWARE": [
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.csp.ContentSecurityPolicyMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
            "webpolicy.console.middleware.IngestMiddleware",
            "axes.middleware.AxesMiddleware",
        ],
        "AUTHENTICATION_BACKENDS": [
            "axes.backends.AxesStandaloneBackend",     # refuses while locked out, counts failures
            "django.contrib.auth.backends.ModelBackend",  # also refuses disabled accounts
        ],
        "ROOT_URLCONF": "webpolicy.console.urls",
        "TEMPLATES": [{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csrf",
                "django.contrib.auth.context_processors.auth",
            ]},
        }],
        "DATABASES": {"default": database_settings(config)},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "USE_TZ": True,
        "TIME_ZONE": time_zone(),
        "LANGUAGE_CODE": "en-gb",
        "LOGIN_URL": "/login/",
        "LOGIN_REDIRECT_URL": "/",
        "LOGOUT_REDIRECT_URL": "/login/",
        "AUTH_PASSWORD_VALIDATORS": [
            {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
            {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
             "OPTIONS": {"min_length": 12}},
            {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
            {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
        ],
        # Sessions: short, closed with the browser, never readable by scripts or other sites.
        "SESSION_COOKIE_AGE": 8 * 3600,
        "SESSION_EXPIRE_AT_BROWSER_CLOSE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_NAME": "webpolicy_session",
        "CSRF_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SAMESITE": "Strict",
        "CSRF_COOKIE_NAME": "webpolicy_csrf",
        "CSRF_TRUSTED_ORIGINS": list(config.trusted_origins),
        # Over HTTPS (a reverse proxy terminating TLS, see README): cookies only over TLS,
        # HSTS, and the proxy's X-Forwarded-Proto trusted to say the request was HTTPS.
        "SESSION_COOKIE_SECURE": config.https,
        "CSRF_COOKIE_SECURE": config.https,
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https") if config.https else None,
        "SECURE_HSTS_SECONDS": 31536000 if config.https else 0,
        "SECURE_SSL_REDIRECT": config.https,
        # HSTS for this host only, never preloaded: the college's other subdomains are not ours
        # to commit to HTTPS (`manage.py check --deploy` would warn: W005, W021).
        "SILENCED_SYSTEM_CHECKS": ["security.W005", "security.W021"],
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "SECURE_CROSS_ORIGIN_OPENER_POLICY": "same-origin",
        "X_FRAME_OPTIONS": "DENY",
        # Django's own CSP (6.0+): nothing but this origin's stylesheet; no scripts at all.
        "SECURE_CSP": {
            "default-src": [CSP.NONE],
            "style-src": [CSP.SELF],
            "img-src": [CSP.SELF],
            "form-action": [CSP.SELF],
            "frame-ancestors": [CSP.NONE],
            "base-uri": [CSP.NONE],
        },
        # django-axes: lock a login name from one address after repeated failures.  The
        # address is REMOTE_ADDR, which waitress takes from X-Forwarded-For only when the
        # request comes from the trusted reverse proxy (server.py).
        "AXES_FAILURE_LIMIT": config.login_failure_limit,
        "AXES_COOLOFF_TIME": dt.timedelta(minutes=config.lockout_minutes),
        "AXES_LOCKOUT_PARAMETERS": [["username", "ip_address"]],
        "AXES_RESET_ON_SUCCESS": True,
        "AXES_LOCKOUT_TEMPLATE": "console/locked.html",
        "AXES_VERBOSE": False,
        "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        "LOGGING": {"version": 1, "disable_existing_loggers": False,
                    "loggers": {"axes": {"level": "WARNING"}}},
        "WEBPOLICY_LOG_DIRS": [str(d) for d in config.log_dirs],
        "WEBPOLICY_RETENTION_DAYS": config.retention_days,
    }


def configure(config: ConsoleConfig, migrate: bool = True) -> None:
    """Configure Django for this process and bring the database schema up to date."""
    import django
    from django.conf import settings

    # Everything this process creates holds learners' data or protects it: the database and
    # SQLite's -wal/-shm files beside it, the secret key, reviews.jsonl.  None of it is for
    # other accounts on the machine.
    os.umask(0o077)
    settings.configure(**django_settings(config))
    django.setup()
    if migrate:
        from django.core.management import call_command
        call_command("migrate", verbosity=0, interactive=False)
        if not is_postgresql(config.database):
            os.chmod(config.database, 0o600)  # learners' records: as private as the log
        from webpolicy.console.roles import ensure_roles
        ensure_roles()
