"""The policy model (policy.yaml) and its validation.

`load_policy` never raises for bad input: it returns every problem as `file:line: message`,
so `webpolicy validate` can show an admin all mistakes at once and a reload can refuse a broken
edit while the last good policy stays in force.  List *contents* are read later by engine.py;
here only the structure and the cross references are checked.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import pwd
import re
import stat
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from webpolicy.policy.severity import SEVERITIES
from webpolicy.policy.yamlnodes import Problem, Reader, line_of, load_document, suggest

LIST_FORMATS = ("auto", "domains", "hosts", "wildcard", "adblock", "ut1", "urls")
ACTIONS = ("block", "log")
YOUTUBE_MODES = ("strict", "moderate", "off")
WEBHOOK_FORMATS = ("json", "slack", "teams")
DIGEST_PERIODS = ("day", "week")
TLS_INSPECT = ("all", "selective")
# A host name as written in tls.fronting (a suffix: every name under it counts too).
_HOST_NAME = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]{1,63}")

# Where the last good copy of each URL source is kept (lists/remote.py): beside policy.yaml by
# default; WEBPOLICY_SOURCES_DIR moves it (a read-only /etc/webpolicy in the Docker image).
SOURCES_DIR_ENV = "WEBPOLICY_SOURCES_DIR"
SOURCES_DIR = ".webpolicy-sources"
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A UT1 category name as UT1 publishes them (adult, mixed_adult, remote-control, ...).
UT1_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# How a URL source reaches its provider (RemoteSource.proxy): straight out, through the
# environment's HTTPS_PROXY/NO_PROXY (opt-in: `proxy: env`), or through the proxy named.
PROXY_NONE = ""
PROXY_ENV = "env"
DEFAULT_PARALLEL = 4
# A ut1: source's `checksum:` what to do about UT1's published MD5 sums (lists/ut1.py): check
# each archive against its sum when one is published and warn when none is (auto), or refuse
# an archive without one (required).  An integrity check only: HTTPS gives the authenticity.
CHECKSUM_AUTO = "auto"
CHECKSUM_REQUIRED = "required"
CHECKSUM_CHOICES = (CHECKSUM_AUTO, CHECKSUM_REQUIRED)

TOP_LEVEL_KEYS = ("version", "default_profile", "profiles", "clients", "lists", "allow", "deny",
                  "passthrough", "block_page", "logging", "metrics", "watchlist", "alerts",
                  "console", "tls", "directory", "downloads", "sign_in")


class PolicyError(Exception):
    """A policy that cannot be used; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class SafeSearch:
    """Per-profile safe search (applied by safesearch.py).  Engines that cannot be forced into
    a safe mode are an ordinary list (blocklists/circumvention/search-engines.txt), blocked
    per profile like any other, so `check`, the log and the metrics all see them."""
    enforce: bool = False                 # Google/Bing/DuckDuckGo strict mode
    youtube: str = "off"                  # strict | moderate | off


@dataclass(frozen=True)
class ConnectRules:
    block_ip_literals: bool = False       # CONNECT 1.2.3.4:443 bypasses host lists
    allowed_ports: tuple[int, ...] = ()   # empty: any port


@dataclass(frozen=True)
class Profile:
    name: str
    block: tuple[str, ...]
    log: tuple[str, ...]
    on_error: str = "block"               # what happens when the filter cannot decide
    safe_search: SafeSearch = SafeSearch()
    connect: ConnectRules = ConnectRules()

    @property
    def blocks(self) -> bool:
        """A profile that blocks fails closed; only such a profile may be the default."""
        return self.on_error == "block"


@dataclass(frozen=True)
class RemoteSource:
    """A list source that is a URL (`sources: [{url: https://..., refresh: 6h}]`).

    The list is compiled from `path`, the last good copy, like any other file: lists/remote.py
    downloads, checks the download and only then replaces that copy; until a first download
    succeeds the file is missing, so the source is a failed source (fails closed)."""
    list: str
    url: str
    path: Path                            # the last good copy (also in ListSpec.sources)
    format: str = "auto"                  # the list's format: a download must parse as it
    statutory: bool = False
    refresh: float = 6 * 3600.0           # seconds between downloads
    max_age: float = 24 * 3600.0          # older than this the list is stale (alert)
    max_shrink: float = 0.5               # refuse a download that lost more of the entries
    ca: Path | None = None                # the provider's own certificate authority
    token_env: str = ""                   # environment variable holding a bearer token
    client_cert: Path | None = None
    client_key: Path | None = None
    sha256_url: str = ""                  # published checksum of the download
    line: int | None = None
    # UT1 (`{ut1: https://.../, categories: [adult]}`): the categories taken from the archive
    # (`url` ends in .tar.gz) or from one file per category (`url` ends in "/"); `path` is
    # then a directory holding one UT1 category directory per category (lists/ut1.py).
    ut1_categories: tuple[str, ...] = ()
    checksum: str = CHECKSUM_AUTO         # UT1: the published MD5 sums (CHECKSUM_CHOICES)
    proxy: str = PROXY_NONE               # "" direct, "env" the environment's, or a proxy URL

    @property
    def is_ut1(self) -> bool:
        return bool(self.ut1_categories)

    def copies(self) -> tuple[Path, ...]:
        """What the list is compiled from: the last good copy, or for UT1 each category's."""
        if self.ut1_categories:
            return tuple(self.path / category for category in self.ut1_categories)
        return (self.path,)


@dataclass(frozen=True)
class DownloadSettings:
    """`downloads:` how URL sources are fetched: an outbound proxy for every source (a source's
    own `proxy:` wins), and how many sources are fetched at once."""
    proxy: str = PROXY_NONE
    parallel: int = DEFAULT_PARALLEL


@dataclass(frozen=True)
class ListSpec:
    name: str
    category: str
    severity: str
    format: str
    sources: tuple[Path, ...]
    statutory: bool = False
    expressions: bool = False             # UT1 regular expressions: opt-in, they over-block
    line: int | None = None
    remote: tuple[RemoteSource, ...] = ()  # URL sources; their copies are among `sources`


@dataclass(frozen=True)
class NetworkRule:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    profile: str


@dataclass(frozen=True)
class GroupRule:
    """clients.groups: members of `group` (a DN, normalised by `normalise_dn`) get `profile`."""

    group: str
    profile: str


@dataclass(frozen=True)
class KerberosSettings:
    """Single sign-on (identity/kerberos.py): proxy logins by a Kerberos ticket, SPNEGO
    `Negotiate`, checked with the gateway's key from `keytab`.  `service` is the gateway's
    service principal (HTTP/<the name clients use for the proxy>); only principals of `realm`
    are accepted, as the user name before the @."""

    keytab: Path
    service: str
    realm: str


@dataclass(frozen=True)
class DirectorySettings:
    """Where proxy logins are checked (identity/directory.py): an LDAP directory, OpenLDAP or
    Active Directory.  Search-then-bind with `bind_dn` (or anonymously), or, with
    `user_dn_template`, a direct bind as the user.  Or, instead of a directory, an htpasswd
    file (`htpasswd`; identity/htpasswd.py) checked through the same cache."""

    url: str
    base_dn: str
    user_filter: str = "(uid={user})"
    bind_dn: str = ""
    bind_password_env: str = ""           # the password itself never lives in policy.yaml
    user_dn_template: str = ""
    group_base_dn: str = ""               # default: base_dn
    group_filter: str = "(member={dn})"
    ca: Path | None = None
    start_tls: bool = False
    cache_minutes: float = 15.0
    timeout_seconds: int = 5
    realm: str = "Web filter"
    kerberos: KerberosSettings | None = None
    htpasswd: Path | None = None


@dataclass(frozen=True)
class SignInSettings:
    """sign_in: clients that sign in on a page the gateway serves (proxy/signinpage.py), for
    networks without proxy logins: transparent mode, and `networks` (library PCs, BYOD
    Wi-Fi).  Checked by the same directory as proxy logins; a session lasts until `idle`
    seconds without a request, `max` seconds in all, a sign-out, or another sign-in from the
    same address."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    transparent: bool = True              # every transparent-mode client signs in
    idle: float = 30 * 60.0
    max: float = 8 * 3600.0


@dataclass(frozen=True)
class Rule:
    """A local allow/deny/passthrough entry as written, with its line for error messages."""

    text: str
    line: int | None


@dataclass(frozen=True)
class BlockPageSettings:
    organisation: str = "This organisation"
    contact: str = "your IT or safeguarding team"
    review_url: str = ""
    timezone: str = "Europe/London"       # the time on the page, as learners read clocks
    review_requests: bool = True          # a form on the page: "ask for a review" (not statutory)


@dataclass(frozen=True)
class LoggingSettings:
    directory: Path = Path("logs")
    retention_days: int = 30
    keep_query: bool = False
    # Where `directory` was written, for log_directory_problems; not part of the settings'
    # identity (moving the line in policy.yaml is no reason to reopen the log).
    directory_line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class WatchlistSpec:
    name: str
    category: str
    severity: str
    terms: tuple[str, ...] = ()
    sources: tuple[Path, ...] = ()


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    format: str = "json"


@dataclass(frozen=True)
class EmailSettings:
    host: str
    port: int = 587
    starttls: bool = True
    username: str = ""
    password_env: str = ""                # the password itself never lives in policy.yaml
    sender: str = ""
    to: tuple[str, ...] = ()


@dataclass(frozen=True)
class DigestSettings:
    """`console.digest`: counts mailed to DSLs by `webpolicy console digest` (a timer runs
    it), through alerts.email's SMTP server."""
    period: str = "week"                  # day | week: what the command sends by default
    to: tuple[str, ...] = ()              # default: alerts.email.to


@dataclass(frozen=True)
class AlertSettings:
    repeat_count: int = 5
    repeat_minutes: int = 10
    webhook: WebhookSettings | None = None
    email: EmailSettings | None = None
    console_url: str = ""                 # console.url: alerts link to the event there
    digest: DigestSettings | None = None  # console.digest (mailed with `email`'s server)


@dataclass(frozen=True)
class ConsoleSettings:
    """`console:`: where DSLs open the console, and where it keeps its index and case work.
    `database` empty means the default SQLite file beside the log directory; a
    postgresql:// URL names a centre's PostgreSQL server (user, host, port, database; no
    password: that comes from `database_password_file` or `database_password_env`, or from
    libpq's own ~/.pgpass)."""
    url: str = ""                         # alerts link to each event there
    database: str = ""                    # "" | an SQLite file | postgresql://user@host:port/name
    database_password_file: Path | None = None
    database_password_env: str = ""
    digest: DigestSettings | None = None  # also in AlertSettings, which sends it

    @property
    def postgresql(self) -> bool:
        return self.database.startswith(POSTGRES_SCHEMES)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def database_url_problem(url: str) -> str | None:
    """What is wrong with a postgresql:// URL for the console, or None."""
    parts = urlsplit(url)
    if parts.password is not None:
        return ("has a password: never put it in policy.yaml; name a file with "
                "console.database_password_file or a variable with console.database_password_env")
    if not parts.path.strip("/"):
        return "names no database: write postgresql://USER@HOST:PORT/DATABASE"
    try:
        parts.port
    except ValueError:
        return "has a port that is not a number"
    return None


@dataclass(frozen=True)
class TlsSettings:
    """`tls:` (issue #19).  `selective` passes through, uninspected, a TLS connection on which
    nothing needs the content (engine/selective.py says when); `all` intercepts every one.
    `fronting` adds to the shipped hosts that can front for other sites (never passed through)."""
    inspect: str = "all"                  # all | selective
    fronting: tuple[str, ...] = ()        # lower-case host names, each with its subdomains

    @property
    def selective(self) -> bool:
        return self.inspect == "selective"


@dataclass(frozen=True)
class Policy:
    path: Path
    version: str
    default_profile: str
    profiles: dict[str, Profile]
    users: dict[str, str]
    networks: tuple[NetworkRule, ...]
    devices: dict[str, str]
    lists: dict[str, ListSpec]
    groups: tuple[GroupRule, ...] = ()
    directory: DirectorySettings | None = None
    sign_in: SignInSettings | None = None
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    passthrough: tuple[Rule, ...] = ()
    block_page: BlockPageSettings = BlockPageSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    watchlist: dict[str, WatchlistSpec] = field(default_factory=dict)
    alerts: AlertSettings = AlertSettings()
    tls: TlsSettings = TlsSettings()
    downloads: DownloadSettings = DownloadSettings()
    console: ConsoleSettings = ConsoleSettings()
    warnings: tuple[Problem, ...] = ()

    def files(self) -> list[Path]:
        """Every file the policy depends on: a change to any of them means a reload."""
        paths = [self.path]
        for spec in self.lists.values():
            paths.extend(spec.sources)
        for spec in self.watchlist.values():
            paths.extend(spec.sources)
        return paths

    def remote_sources(self) -> list[RemoteSource]:
        """Every URL source of every list, in policy order."""
        return [source for spec in self.lists.values() for source in spec.remote]


def load_policy(path: str | Path) -> Policy:
    """Read and validate policy.yaml; raise PolicyError listing every problem."""
    path = Path(path)
    root, problems = load_document(path)
    if problems:
        raise PolicyError(problems)
    reader = Reader(str(path))
    policy = _PolicyBuilder(reader, path).build(root)
    if reader.errors or policy is None:
        raise PolicyError(reader.problems)
    return policy


def _https(url: str) -> bool:
    return url.lower().startswith("https://") and len(url) > len("https://")


class _PolicyBuilder:
    """Turns the node tree into a Policy, reporting problems to the reader as it goes."""

    def __init__(self, reader: Reader, path: Path):
        self.r = reader
        self.path = path
        self.base = path.parent
        self._digest_node: yaml.Node | None = None     # console.digest, for _alerts' checks

    def build(self, root: yaml.Node | None) -> Policy | None:
        r = self.r
        top = r.mapping(root, "policy", TOP_LEVEL_KEYS,
                        required=("version", "default_profile", "profiles", "lists"))
        if not top:
            if root is None:
                r.error(None, "the file is empty")
            return None
        downloads = self._downloads(top.get("downloads"))
        lists = self._lists(top.get("lists"), downloads)
        profiles = self._profiles(top.get("profiles"), lists)
        users, networks, devices, groups = self._clients(top.get("clients"), profiles)
        default_profile = self._default_profile(top.get("default_profile"), profiles)
        console = self._console(top.get("console"))
        policy = Policy(
            path=self.path,
            version=r.string(top.get("version"), "version", "") or "",
            default_profile=default_profile,
            profiles=profiles,
            users=users,
            groups=groups,
            networks=networks,
            directory=self._directory(top.get("directory")),
            sign_in=self._sign_in(top.get("sign_in"), top.get("directory")),
            devices=devices,
            lists=lists,
            allow=self._rules(top.get("allow"), "allow"),
            deny=self._rules(top.get("deny"), "deny"),
            passthrough=self._rules(top.get("passthrough"), "passthrough"),
            block_page=self._block_page(top.get("block_page")),
            logging=self._logging(top.get("logging")),
            metrics=self._metrics(top.get("metrics")),
            watchlist=self._watchlist(top.get("watchlist")),
            alerts=self._alerts(top.get("alerts"), console.url, console.digest,
                                self._digest_node),
            tls=self._tls(top.get("tls")),
            downloads=downloads,
            console=console,
            warnings=(),
        )
        if not policy.version:
            r.error(top.get("version") or root, "version: must be a non-empty text, e.g. a date")
        return policy

    # -- lists ----------------------------------------------------------------------------

    def _lists(self, node: yaml.Node | None,
               downloads: DownloadSettings) -> dict[str, ListSpec]:
        specs = {}
        for name, spec_node in self.r.free_mapping(node, "lists").items():
            spec = self._list(name, spec_node, downloads)
            if spec:
                specs[name] = spec
        if node is not None and not specs and not self.r.errors:
            self.r.error(node, "lists: at least one list is needed")
        return specs

    def _list(self, name: str, node: yaml.Node, downloads: DownloadSettings) -> ListSpec | None:
        r, where = self.r, f"lists.{name}"
        if name in ("allow", "deny"):
            r.error(node, f"{where}: '{name}' is reserved for the local {name} rules")
            return None
        keys = r.mapping(node, where, ("category", "severity", "format", "sources", "statutory",
                                       "expressions"), required=("category", "sources"))
        fmt = r.choice(keys.get("format"), where + ".format", LIST_FORMATS, "auto")
        statutory = r.boolean(keys.get("statutory"), where + ".statutory", False)
        sources: list[Path] = []
        remote: list[RemoteSource] = []
        refused = False
        for item in r.sequence(keys.get("sources"), where + ".sources"):
            if isinstance(item, yaml.MappingNode):
                source = self._remote(name, item, where + ".sources", fmt, statutory,
                                      downloads)
                if source is not None:
                    remote.append(source)
                    sources.extend(source.copies())
                refused = refused or source is None
                continue
            text = r.string(item, where + ".sources")
            if text:
                sources.append(self._file(text))
            elif text is not None:
                r.error(item, f"{where}.sources: empty item")
        if keys.get("sources") is not None and not sources and not refused:
            r.error(keys["sources"], f"{where}.sources: name at least one file or directory")
        return ListSpec(
            name=name,
            category=r.string(keys.get("category"), where + ".category", name) or name,
            severity=r.choice(keys.get("severity"), where + ".severity", SEVERITIES, "medium"),
            format=fmt,
            sources=tuple(sources),
            statutory=statutory,
            expressions=r.boolean(keys.get("expressions"), where + ".expressions", False),
            line=node.start_mark.line + 1,
            remote=tuple(remote),
        )

    def _remote(self, name: str, node: yaml.Node, where: str, fmt: str, statutory: bool,
                downloads: DownloadSettings) -> RemoteSource | None:
        """One `{url: https://..., refresh: 6h, ...}` or `{ut1: https://..., categories: [...]}`
        source; its last good copy's path."""
        r = self.r
        keys = r.mapping(node, where, ("url", "ut1", "categories", "refresh", "max_age",
                                       "max_shrink", "ca", "token_env", "client_cert",
                                       "client_key", "sha256_url", "checksum", "proxy"))
        if ("url" in keys) == ("ut1" in keys):
            r.error(node, f"{where}: a downloaded source names either url: (one list file) or "
                          "ut1: (UT1 categories), e.g. {url: https://lists.example/x.txt}")
            return None
        kind = "url" if "url" in keys else "ut1"
        url = r.string(keys[kind], f"{where}.{kind}", "") or ""
        if not url:
            return None
        if not _https(url):
            r.error(keys[kind], f"{where}.{kind}: '{url}' is not an https:// URL; list "
                                "sources are downloaded over HTTPS only")
            return None
        categories = self._ut1_categories(keys, where, url) if kind == "ut1" else ()
        if kind == "ut1" and not categories:
            return None
        if kind == "url" and "categories" in keys:
            r.error(keys["categories"], f"{where}.categories: only for a ut1: source")
        if kind == "url" and fmt == "ut1":
            r.error(keys["url"], f"{where}.url: a URL source is one file; format ut1 needs a "
                                 "UT1 category directory (a ut1: source downloads those)")
            return None
        if kind == "ut1" and fmt not in ("auto", "ut1"):
            r.error(keys["ut1"], f"{where}.ut1: UT1 categories are directories; the list's "
                                 f"format must be ut1 or auto, not {fmt}")
            return None
        refresh = self._duration(keys.get("refresh"), where + ".refresh", 6 * 3600.0)
        sha256_url = r.string(keys.get("sha256_url"), where + ".sha256_url", "") or ""
        if sha256_url and kind == "ut1":
            r.error(keys["sha256_url"], f"{where}.sha256_url: not for a ut1: source (UT1 "
                                        "publishes MD5 sums only)")
        elif sha256_url and not _https(sha256_url):
            r.error(keys["sha256_url"], f"{where}.sha256_url: '{sha256_url}' is not an "
                                        "https:// URL")
        checksum = r.choice(keys.get("checksum"), where + ".checksum", CHECKSUM_CHOICES,
                            CHECKSUM_AUTO)
        if "checksum" in keys and kind == "url":
            r.error(keys["checksum"], f"{where}.checksum: only for a ut1: source (UT1's MD5 "
                                      "sums); a url: source names its checksum by sha256_url")
        cert, key = keys.get("client_cert"), keys.get("client_key")
        if (cert is None) != (key is None):
            r.error(cert or key, f"{where}: client_cert and client_key go together")
        identity = url if kind == "url" else f"ut1 {url} {' '.join(categories)}"
        return RemoteSource(
            list=name, url=url, path=self._copy_path(name, identity, kind), format=fmt,
            statutory=statutory, refresh=refresh,
            max_age=self._duration(keys.get("max_age"), where + ".max_age", 4 * refresh),
            max_shrink=self._fraction(keys.get("max_shrink"), where + ".max_shrink"),
            ca=self._optional_file(keys.get("ca"), where + ".ca"),
            token_env=r.string(keys.get("token_env"), where + ".token_env", "") or "",
            client_cert=self._optional_file(cert, where + ".client_cert"),
            client_key=self._optional_file(key, where + ".client_key"),
            sha256_url=sha256_url, line=node.start_mark.line + 1,
            ut1_categories=categories, checksum=checksum,
            proxy=self._proxy(keys["proxy"], where + ".proxy") if "proxy" in keys
            else downloads.proxy)

    def _ut1_categories(self, keys: dict[str, yaml.Node], where: str,
                        url: str) -> tuple[str, ...]:
        r = self.r
        path = url.split("?", 1)[0].split("#", 1)[0]
        if not (path.endswith("/") or path.endswith((".tar.gz", ".tgz"))):
            r.error(keys["ut1"], f"{where}.ut1: '{url}' is neither UT1's download directory "
                                 "(ending in /, one <category>.tar.gz per category) nor its "
                                 "archive (blacklists.tar.gz)")
            return ()
        if "categories" not in keys:
            r.error(keys["ut1"], f"{where}: missing required key 'categories' (the UT1 "
                                 "categories to take, e.g. [adult, mixed_adult])")
            return ()
        names = []
        for value, item in r.strings(keys["categories"], where + ".categories"):
            if not UT1_CATEGORY.fullmatch(value):
                r.error(item, f"{where}.categories: '{value}' is not a UT1 category name")
            elif value in names:
                r.error(item, f"{where}.categories: '{value}' appears twice")
            else:
                names.append(value)
        if not names and keys["categories"] is not None and not r.errors:
            r.error(keys["categories"], f"{where}.categories: name at least one category")
        return tuple(names)

    def _fraction(self, node: yaml.Node | None, where: str) -> float:
        value = self.r.scalar(node)
        if value is None:
            return 0.5
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            self.r.error(node, f"{where}: expected a fraction from 0 to 1 (0.5: refuse a "
                               f"download with half the entries gone), got '{node.value}'")
            return 0.5
        return float(value)

    def _proxy(self, node: yaml.Node | None, where: str) -> str:
        """`none`, `env` (HTTPS_PROXY and NO_PROXY from the environment) or
        http(s)://host:port."""
        text = self.r.string(node, where, "none") or "none"
        if text == "none":
            return PROXY_NONE
        if text == PROXY_ENV:
            return PROXY_ENV
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None \
                or parts.path not in ("", "/") or parts.query or parts.fragment:
            self.r.error(node, f"{where}: '{text}' is not a proxy: expected http://host:port "
                               "(or https://), env (HTTPS_PROXY from the environment) or none")
            return PROXY_NONE
        if parts.username or parts.password:
            self.r.error(node, f"{where}: a password does not belong in policy.yaml; the "
                               "downloads proxy must accept the gateway without one")
            return PROXY_NONE
        return f"{parts.scheme}://{parts.netloc}"

    def _downloads(self, node: yaml.Node | None) -> DownloadSettings:
        keys = self.r.mapping(node, "downloads", ("proxy", "parallel"))
        return DownloadSettings(
            proxy=self._proxy(keys["proxy"], "downloads.proxy") if "proxy" in keys
            else PROXY_NONE,
            parallel=self.r.integer(keys.get("parallel"), "downloads.parallel",
                                    DEFAULT_PARALLEL, minimum=1, maximum=16))

    def _duration(self, node: yaml.Node | None, where: str, default: float) -> float:
        """`90s`, `30m`, `6h`, `1d`, or a number of seconds."""
        value = self.r.scalar(node)
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(value))
        if not found or float(found.group(1)) <= 0:
            self.r.error(node, f"{where}: '{node.value}' is not a duration (e.g. 30m, 6h, 1d)")
            return default
        return float(found.group(1)) * DURATION_UNITS[found.group(2)]

    def _optional_file(self, node: yaml.Node | None, where: str) -> Path | None:
        text = self.r.string(node, where, "")
        return self._file(text) if text else None

    def _copy_path(self, name: str, url: str, kind: str = "url") -> Path:
        """A stable place for a URL source's last good copy: per list, named by the URL (for
        UT1, the URL and the categories: a directory of category directories)."""
        configured = os.environ.get(SOURCES_DIR_ENV, "").strip()
        base = self._file(configured) if configured else self.base / SOURCES_DIR
        folder = name if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) else \
            "list-" + hashlib.sha256(name.encode()).hexdigest()[:16]
        suffix = ".txt" if kind == "url" else ".ut1"
        return base / folder / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)

    def _file(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base / path

    # -- profiles and clients -------------------------------------------------------------

    def _profiles(self, node: yaml.Node | None, lists: dict[str, ListSpec]) -> dict[str, Profile]:
        profiles = {}
        for name, profile_node in self.r.free_mapping(node, "profiles").items():
            profiles[name] = self._profile(name, profile_node, lists)
        return profiles

    def _profile(self, name: str, node: yaml.Node, lists: dict[str, ListSpec]) -> Profile:
        r, where = self.r, f"profiles.{name}"
        keys = r.mapping(node, where, ("block", "log", "on_error", "safe_search", "connect"))
        block = self._list_refs(keys.get("block"), where + ".block", lists)
        log = self._list_refs(keys.get("log"), where + ".log", lists)
        for list_name, item in r.strings(keys.get("log"), where + ".log"):
            if list_name in lists and lists[list_name].statutory:
                r.error(item, f"{where}.log: '{list_name}' is a statutory list; it is blocked for "
                              "every profile and cannot be only logged")
        for list_name in set(block) & set(log):
            r.error(keys.get("log"), f"{where}: '{list_name}' is under both block and log")
        return Profile(
            name=name, block=block, log=log,
            on_error=r.choice(keys.get("on_error"), where + ".on_error", ("block", "allow"), "block"),
            safe_search=self._safe_search(keys.get("safe_search"), where + ".safe_search"),
            connect=self._connect(keys.get("connect"), where + ".connect"),
        )

    def _list_refs(self, node: yaml.Node | None, where: str,
                   lists: dict[str, ListSpec]) -> tuple[str, ...]:
        names = []
        for list_name, item in self.r.strings(node, where):
            if list_name not in lists:
                self.r.error(item, f"{where}: unknown list '{list_name}'{suggest(list_name, list(lists))}")
            else:
                names.append(list_name)
        return tuple(dict.fromkeys(names))

    def _safe_search(self, node: yaml.Node | None, where: str) -> SafeSearch:
        keys = self.r.mapping(node, where, ("enforce", "youtube"))
        return SafeSearch(
            enforce=self.r.boolean(keys.get("enforce"), where + ".enforce", False),
            youtube=self.r.choice(keys.get("youtube"), where + ".youtube", YOUTUBE_MODES, "off"),
        )

    def _connect(self, node: yaml.Node | None, where: str) -> ConnectRules:
        keys = self.r.mapping(node, where, ("block_ip_literals", "allowed_ports"))
        ports = []
        for item in self.r.sequence(keys.get("allowed_ports"), where + ".allowed_ports"):
            ports.append(self.r.integer(item, where + ".allowed_ports", 443, 1, 65535))
        return ConnectRules(
            block_ip_literals=self.r.boolean(keys.get("block_ip_literals"),
                                             where + ".block_ip_literals", False),
            allowed_ports=tuple(ports),
        )

    def _clients(self, node: yaml.Node | None, profiles: dict[str, Profile]):
        r = self.r
        keys = r.mapping(node, "clients", ("users", "groups", "networks", "devices"))
        users = {}
        for user, value in r.free_mapping(keys.get("users"), "clients.users").items():
            users[user] = self._profile_ref(value, f"clients.users.{user}", profiles)
        networks = []
        for item in r.sequence(keys.get("networks"), "clients.networks"):
            rule = self._network(item, profiles)
            if rule:
                networks.append(rule)
        devices = {}
        for address, value in r.free_mapping(keys.get("devices"), "clients.devices").items():
            try:
                canonical = str(ipaddress.ip_address(address))
            except ValueError:
                r.error(value, f"clients.devices: '{address}' is not an IP address")
                continue
            devices[canonical] = r.string(value, f"clients.devices.{address}", "") or ""
        groups = []
        for item in r.sequence(keys.get("groups"), "clients.groups"):
            found = r.mapping(item, "clients.groups", ("group", "profile"),
                              required=("group", "profile"))
            dn = r.string(found.get("group"), "clients.groups.group", "") or ""
            profile = self._profile_ref(found.get("profile"), "clients.groups.profile", profiles)
            if not dn:
                continue
            try:
                groups.append(GroupRule(normalise_dn(dn), profile))
            except ValueError:
                r.error(found["group"], f"clients.groups: '{dn}' is not a DN "
                                        "(e.g. cn=staff,ou=groups,dc=college,dc=ac,dc=uk)")
        return users, tuple(networks), devices, tuple(groups)

    def _directory(self, node: yaml.Node | None) -> DirectorySettings | None:
        """directory: where proxy logins are checked.  Passwords never cross the network in
        clear: plain ldap:// is accepted only to a loopback address or with start_tls."""
        if node is None:
            return None
        r, where = self.r, "directory"
        keys = r.mapping(node, where, ("url", "base_dn", "user_filter", "bind_dn",
                                       "bind_password_env", "user_dn_template", "group_base_dn",
                                       "group_filter", "ca", "start_tls", "cache_minutes",
                                       "timeout_seconds", "realm", "kerberos", "htpasswd"),
                         required=() if "htpasswd" in _keys_of(node) else ("url", "base_dn"))
        if not keys:
            return None
        default = DirectorySettings("", "")
        if "htpasswd" in keys:
            return self._htpasswd(keys, default)
        url = r.string(keys.get("url"), "directory.url", "") or ""
        start_tls = r.boolean(keys.get("start_tls"), "directory.start_tls", False)
        found = re.fullmatch(r"(ldaps?)://(\[[^\]]+\]|[^:/]+)(?::(\d{1,5}))?/?", url)
        if not found:
            r.error(keys.get("url"), f"directory.url: '{url}' is not ldap://host[:port] or "
                                     "ldaps://host[:port]")
        elif found.group(1) == "ldap" and not start_tls and \
                found.group(2).strip("[]") not in ("127.0.0.1", "::1", "localhost"):
            r.error(keys.get("url"), "directory.url: ldap:// would send passwords in clear; use "
                                     "ldaps:// or start_tls: true")
        settings = {}
        for key, needs in (("user_filter", "{user}"), ("user_dn_template", "{user}"),
                           ("group_filter", "{dn}")):
            text = r.string(keys.get(key), f"directory.{key}", None)
            if text is None:
                continue
            if needs not in text:
                r.error(keys[key], f"directory.{key}: must contain {needs}")
            settings[key] = text
        for key in ("base_dn", "bind_dn", "group_base_dn"):
            text = r.string(keys.get(key), f"directory.{key}", "") or ""
            if text:
                try:
                    normalise_dn(text)
                except ValueError:
                    r.error(keys[key], f"directory.{key}: '{text}' is not a DN")
            settings[key] = text
        bind_password_env = r.string(keys.get("bind_password_env"),
                                     "directory.bind_password_env", "") or ""
        if settings["bind_dn"] and not bind_password_env:
            r.error(keys.get("bind_dn"), "directory.bind_dn needs bind_password_env: the name "
                                         "of the environment variable holding its password")
        cache = self._cache_minutes(keys, default)
        return DirectorySettings(
            url=url, start_tls=start_tls, bind_password_env=bind_password_env,
            ca=self._optional_file(keys.get("ca"), "directory.ca"),
            cache_minutes=float(cache),
            timeout_seconds=r.integer(keys.get("timeout_seconds"), "directory.timeout_seconds",
                                      default.timeout_seconds, 1, 60),
            realm=r.string(keys.get("realm"), "directory.realm", default.realm) or default.realm,
            kerberos=self._kerberos(keys.get("kerberos"), settings), **settings)

    def _htpasswd(self, keys: dict[str, yaml.Node], default: DirectorySettings) -> DirectorySettings:
        """directory: {htpasswd: FILE}: logins from an htpasswd file instead of LDAP, through
        the same cache (bcrypt at any cost is usable)."""
        r = self.r
        for key in keys:
            if key not in ("htpasswd", "cache_minutes", "realm", "kerberos"):
                r.error(keys[key], f"directory.{key}: not used with directory.htpasswd (an "
                                   "htpasswd file or an LDAP directory, not both)")
        path = self._optional_file(keys.get("htpasswd"), "directory.htpasswd")
        return DirectorySettings(
            url="", base_dn="", htpasswd=path, cache_minutes=self._cache_minutes(keys, default),
            realm=r.string(keys.get("realm"), "directory.realm", default.realm) or default.realm,
            kerberos=self._kerberos(keys.get("kerberos"), {}))

    def _cache_minutes(self, keys: dict[str, yaml.Node], default: DirectorySettings) -> float:
        cache = self.r.scalar(keys.get("cache_minutes"))
        if cache is None:
            return default.cache_minutes
        if isinstance(cache, bool) or not isinstance(cache, (int, float)) or not 0 <= cache <= 1440:
            self.r.error(keys["cache_minutes"], "directory.cache_minutes: expected minutes from 0 "
                         f"to 1440 (e.g. 15, or 0.5), got '{keys['cache_minutes'].value}'")
            return default.cache_minutes
        return float(cache)

    def _kerberos(self, node: yaml.Node | None, directory: dict) -> KerberosSettings | None:
        """directory.kerberos: single sign-on.  The directory is then asked for the groups of
        a person signed in by ticket without their password, so it must be searchable as the
        service account (or anonymously): not with user_dn_template alone."""
        if node is None:
            return None
        r, where = self.r, "directory.kerberos"
        keys = r.mapping(node, where, ("keytab", "service", "realm"),
                         required=("keytab", "service", "realm"))
        if not keys:
            return None
        service = r.string(keys.get("service"), where + ".service", "") or ""
        if service and not re.fullmatch(r"HTTP/[A-Za-z0-9.-]+", service):
            r.error(keys["service"], f"{where}.service: '{service}' is not HTTP/<host name> "
                                     "(e.g. HTTP/gateway.college.example: the name clients use "
                                     "for the proxy, without @REALM)")
        realm = r.string(keys.get("realm"), where + ".realm", "") or ""
        if realm and not re.fullmatch(r"[A-Za-z0-9._-]+", realm):
            r.error(keys["realm"], f"{where}.realm: '{realm}' is not a Kerberos realm "
                                   "(e.g. COLLEGE.EXAMPLE)")
        if directory.get("user_dn_template") and not directory.get("bind_dn"):
            r.error(node, f"{where}: needs bind_dn (a service account): the directory is asked "
                          "for the groups of a person signed in by Kerberos, who gives no "
                          "password to bind with")
        keytab = self._optional_file(keys.get("keytab"), where + ".keytab")
        if keytab is None:
            return None
        return KerberosSettings(keytab=keytab, service=service, realm=realm)

    def _sign_in(self, node: yaml.Node | None,
                 directory: yaml.Node | None) -> SignInSettings | None:
        """sign_in: who signs in on the gateway's page, and how long a session lasts."""
        if node is None:
            return None
        r, default = self.r, SignInSettings()
        keys = r.mapping(node, "sign_in", ("networks", "transparent", "idle", "max"))
        if directory is None:
            r.error(node, "sign_in: needs directory: (the sign-in page checks passwords "
                          "against the same directory as proxy logins); add a directory: "
                          "section or remove sign_in:")
        networks = []
        for text, item in r.strings(keys.get("networks"), "sign_in.networks"):
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                r.error(item, f"sign_in.networks: '{text}' is not a network (e.g. 10.30.0.0/16)")
        idle = self._duration(keys.get("idle"), "sign_in.idle", default.idle)
        longest = self._duration(keys.get("max"), "sign_in.max", default.max)
        if idle > longest:
            r.error(keys.get("idle") or node, "sign_in.idle: longer than sign_in.max; a session "
                                              "ends at max whatever it does, so lower idle")
        return SignInSettings(
            networks=tuple(networks),
            transparent=r.boolean(keys.get("transparent"), "sign_in.transparent",
                                  default.transparent),
            idle=idle, max=longest)

    def _network(self, node: yaml.Node, profiles: dict[str, Profile]) -> NetworkRule | None:
        keys = self.r.mapping(node, "clients.networks", ("cidr", "profile"),
                              required=("cidr", "profile"))
        cidr = self.r.string(keys.get("cidr"), "clients.networks.cidr")
        profile = self._profile_ref(keys.get("profile"), "clients.networks.profile", profiles)
        if not cidr or not profile:
            return None
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            self.r.error(keys["cidr"], f"clients.networks: '{cidr}' is not a network (e.g. 10.20.0.0/16)")
            return None
        return NetworkRule(network, profile)

    def _profile_ref(self, node: yaml.Node | None, where: str,
                     profiles: dict[str, Profile]) -> str:
        name = self.r.string(node, where, "") or ""
        if name and name not in profiles:
            self.r.error(node, f"{where}: unknown profile '{name}'{suggest(name, list(profiles))}")
        return name

    def _default_profile(self, node: yaml.Node | None, profiles: dict[str, Profile]) -> str:
        name = self._profile_ref(node, "default_profile", profiles)
        if name in profiles and not profiles[name].blocks:
            self.r.error(node, f"default_profile: '{name}' has on_error: allow; unknown clients "
                               "must get a profile that blocks when the filter cannot decide")
        return name

    # -- local rules and settings ---------------------------------------------------------

    def _rules(self, node: yaml.Node | None, where: str) -> tuple[Rule, ...]:
        return tuple(Rule(text, item.start_mark.line + 1) for text, item in self.r.strings(node, where))

    def _block_page(self, node: yaml.Node | None) -> BlockPageSettings:
        keys = self.r.mapping(node, "block_page", ("organisation", "contact", "review_url",
                                                   "timezone", "review_requests"))
        default = BlockPageSettings()
        return BlockPageSettings(
            organisation=self.r.string(keys.get("organisation"), "block_page.organisation",
                                       default.organisation),
            contact=self.r.string(keys.get("contact"), "block_page.contact", default.contact),
            review_url=self.r.string(keys.get("review_url"), "block_page.review_url", ""),
            timezone=self._timezone(keys.get("timezone"), default.timezone),
            review_requests=self.r.boolean(keys.get("review_requests"),
                                           "block_page.review_requests", True),
        )

    def _timezone(self, node: yaml.Node | None, default: str) -> str:
        name = self.r.string(node, "block_page.timezone", default) or default
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.r.error(node, f"block_page.timezone: '{name}' is not a time zone name such as "
                               "Europe/London (IANA tz database)")
            return default
        return name

    def _logging(self, node: yaml.Node | None) -> LoggingSettings:
        keys = self.r.mapping(node, "logging", ("directory", "retention_days", "keep_query"))
        directory = self.r.string(keys.get("directory"), "logging.directory", "logs")
        return LoggingSettings(
            directory=self._file(directory or "logs"),
            directory_line=line_of(keys.get("directory")),
            retention_days=self.r.integer(keys.get("retention_days"), "logging.retention_days",
                                          30, 1, 3650),
            keep_query=self.r.boolean(keys.get("keep_query"), "logging.keep_query", False),
        )

    def _metrics(self, node: yaml.Node | None) -> MetricsSettings:
        keys = self.r.mapping(node, "metrics", ("enabled", "listen"))
        enabled = self.r.boolean(keys.get("enabled"), "metrics.enabled", True)
        listen = self.r.string(keys.get("listen"), "metrics.listen", "127.0.0.1:9464") or ""
        host, _, port_text = listen.rpartition(":")
        if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            self.r.error(keys.get("listen"), f"metrics.listen: '{listen}' is not host:port "
                                             "(e.g. 127.0.0.1:9464)")
            return MetricsSettings(enabled=enabled)
        return MetricsSettings(enabled=enabled, host=host.strip("[]"), port=int(port_text))

    def _watchlist(self, node: yaml.Node | None) -> dict[str, WatchlistSpec]:
        specs = {}
        for name, spec_node in self.r.free_mapping(node, "watchlist").items():
            where = f"watchlist.{name}"
            keys = self.r.mapping(spec_node, where, ("category", "severity", "terms", "sources"),
                                  required=("category",))
            terms = tuple(t for t, _ in self.r.strings(keys.get("terms"), where + ".terms"))
            sources = tuple(self._file(t) for t, _ in self.r.strings(keys.get("sources"),
                                                                        where + ".sources"))
            if not terms and not sources:
                self.r.error(spec_node, f"{where}: give terms or sources (files of terms)")
            specs[name] = WatchlistSpec(
                name=name,
                category=self.r.string(keys.get("category"), where + ".category", name) or name,
                severity=self.r.choice(keys.get("severity"), where + ".severity", SEVERITIES, "high"),
                terms=terms, sources=sources)
        return specs

    def _console(self, node: yaml.Node | None) -> ConsoleSettings:
        """The safeguarding console (`webpolicy console`): `url`, where DSLs open it (links
        in alerts: an http(s) URL, as the DSLs' browsers reach it); `database`, where it keeps
        its index and cases (default: an SQLite file beside the log directory); `digest`, the
        counts mailed to DSLs (its node is kept for the checks that need alerts.email)."""
        keys = self.r.mapping(node, "console", ("url", "database", "database_password_file",
                                                "database_password_env", "digest"))
        url = self.r.string(keys.get("url"), "console.url", "") or ""
        if url and not re.match(r"https?://[^/\s]+", url):
            self.r.error(keys.get("url"), f"console.url: '{url}' is not an http(s) address such "
                                          "as https://console.college.internal")
            url = ""
        database = (self.r.string(keys.get("database"), "console.database", "") or "").strip()
        if database.startswith(POSTGRES_SCHEMES):
            problem = database_url_problem(database)
            if problem:
                self.r.error(keys.get("database"), f"console.database: the URL {problem}")
                database = ""
        elif "://" in database:
            self.r.error(keys.get("database"), f"console.database: '{database}' is neither a "
                         "postgresql:// URL nor an SQLite file")
            database = ""
        elif database:
            database = str(self._file(database))
        password_env = self.r.string(keys.get("database_password_env"),
                                     "console.database_password_env", "") or ""
        password_file = self._optional_file(keys.get("database_password_file"),
                                            "console.database_password_file")
        if (password_env or password_file) and not database.startswith(POSTGRES_SCHEMES):
            self.r.error(keys.get("database_password_env") or keys.get("database_password_file"),
                         "console: a database password is only for a postgresql:// database")
        if password_env and password_file:
            self.r.error(keys.get("database_password_env"), "console: give "
                         "database_password_file or database_password_env, not both")
        return ConsoleSettings(url=url, database=database, database_password_file=password_file,
                               database_password_env=password_env, digest=self._digest(keys))

    def _digest(self, keys: dict) -> DigestSettings | None:
        self._digest_node = keys.get("digest")
        if self._digest_node is None:
            return None
        found = self.r.mapping(self._digest_node, "console.digest", ("period", "to"))
        return DigestSettings(
            period=self.r.choice(found.get("period"), "console.digest.period",
                                 DIGEST_PERIODS, "week"),
            to=tuple(t for t, _ in self.r.strings(found.get("to"), "console.digest.to")))

    def _alerts(self, node: yaml.Node | None, console_url: str = "",
                digest: DigestSettings | None = None,
                digest_node: yaml.Node | None = None) -> AlertSettings:
        r = self.r
        keys = r.mapping(node, "alerts", ("repeat", "webhook", "email"))
        repeat = r.mapping(keys.get("repeat"), "alerts.repeat", ("count", "minutes"))
        webhook = None
        if keys.get("webhook") is not None:
            hook = r.mapping(keys["webhook"], "alerts.webhook", ("url", "format"), required=("url",))
            webhook = WebhookSettings(
                url=r.string(hook.get("url"), "alerts.webhook.url", "") or "",
                format=r.choice(hook.get("format"), "alerts.webhook.format", WEBHOOK_FORMATS, "json"))
        email = None
        if keys.get("email") is not None:
            mail = r.mapping(keys["email"], "alerts.email",
                             ("host", "port", "starttls", "username", "password_env", "from", "to"),
                             required=("host", "from", "to"))
            email = EmailSettings(
                host=r.string(mail.get("host"), "alerts.email.host", "") or "",
                port=r.integer(mail.get("port"), "alerts.email.port", 587, 1, 65535),
                starttls=r.boolean(mail.get("starttls"), "alerts.email.starttls", True),
                username=r.string(mail.get("username"), "alerts.email.username", "") or "",
                password_env=r.string(mail.get("password_env"), "alerts.email.password_env", "") or "",
                sender=r.string(mail.get("from"), "alerts.email.from", "") or "",
                to=tuple(t for t, _ in r.strings(mail.get("to"), "alerts.email.to")))
        if digest is not None and email is None:
            r.error(digest_node, "console.digest: digests are sent through the SMTP server of "
                                 "alerts.email; configure alerts.email (host, from, to)")
        elif digest is not None and not console_url:
            r.error(digest_node, "console.digest: the digest links to the console; set "
                                 "console.url (e.g. https://console.college.internal)")
        return AlertSettings(
            repeat_count=r.integer(repeat.get("count"), "alerts.repeat.count", 5, 1, 10000),
            repeat_minutes=r.integer(repeat.get("minutes"), "alerts.repeat.minutes", 10, 1, 1440),
            webhook=webhook, email=email, console_url=console_url, digest=digest)

    def _tls(self, node: yaml.Node | None) -> TlsSettings:
        r = self.r
        keys = r.mapping(node, "tls", ("inspect", "fronting"))
        fronting = []
        for text, item in r.strings(keys.get("fronting"), "tls.fronting"):
            name = text.strip().lower().removeprefix("*.").removeprefix(".").rstrip(".")
            if _HOST_NAME.fullmatch(name) and "." in name:
                fronting.append(name)
            else:
                r.error(item, f"tls.fronting: '{text}' is not a host name (e.g. cdn.example.net; "
                              "its subdomains count too)")
        inspect = r.choice(keys.get("inspect"), "tls.inspect", TLS_INSPECT, "all")
        return TlsSettings(inspect=inspect, fronting=tuple(fronting))


# -- the log directory on this machine -----------------------------------------------------
#
# Not part of load_policy, which stays a pure reading of the file: the answer depends on which
# account asks and on the machine (load_policy also serves `check`, `report` and reloads, and
# tests on copies of a policy), and it can change after validation.  `webpolicy validate` and
# `webpolicy run` call this as the account they run as; the proxy itself, at start, opens the
# log for real (safeguarding.logwriter.preflight), which is the check that cannot be wrong.

_SUGGESTED = "/var/log/webpolicy"


def normalise_dn(dn: str) -> str:
    """A DN as compared everywhere (policy groups, the directory's answers): attribute types
    and values lower-cased, no spaces around separators.  ValueError if it is not a DN."""
    from ldap3.utils.dn import parse_dn  # pure parsing; ldap3 is a mitmproxy dependency
    try:
        parts = parse_dn(dn.strip(), strip=True)
    except Exception:  # noqa: BLE001 - ldap3 raises its own exception types
        raise ValueError(f"'{dn}' is not a DN") from None
    if not parts:
        raise ValueError(f"'{dn}' is not a DN")
    return ",".join(f"{kind.strip().lower()}={value.strip().lower()}"
                    for kind, value, _separator in parts)


def log_directory_problems(policy: Policy) -> list[Problem]:
    """What would stop the proxy keeping its log in logging.directory, as `file:line`
    problems: an unusable directory passes every other check and then loses every record."""
    settings = policy.logging
    return [Problem(str(policy.path), settings.directory_line, f"logging.directory: {message}",
                    warning)
            for message, warning in _directory_findings(Path(settings.directory))]


def _account() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _directory_findings(directory: Path) -> list[tuple[str, bool]]:
    """(message, is a warning) for the directory and the one that holds it."""
    me = _account()
    if os.path.lexists(directory):
        found = _existing_findings(directory, me)
        holder = directory.parent
    else:
        holder = _nearest_existing(directory)
        found = _creatable_findings(directory, holder, me)
    return found + _holder_findings(holder)


def _existing_findings(directory: Path, me: str) -> list[tuple[str, bool]]:
    if not directory.is_dir():
        return [(f"{directory} is not a directory (a file is in the way), so every record "
                 f"would be lost: remove it, or name a directory such as {_SUGGESTED}", False)]
    if not os.access(directory, os.W_OK | os.X_OK):
        return [(f"{directory} is not writable by {me}, so every record would be lost: "
                 f"chown {me} {directory} && chmod 0700 {directory} (run validate as the "
                 "proxy's account)", False)]
    owner = directory.stat().st_uid
    if os.geteuid() != 0 and owner != os.geteuid():
        return [(f"{directory} belongs to uid {owner}, not {me}: the proxy keeps it 0700 and "
                 f"cannot while another account owns it: chown {me} {directory}", False)]
    return []


def _creatable_findings(directory: Path, holder: Path, me: str) -> list[tuple[str, bool]]:
    if not holder.is_dir():
        return [(f"{directory} cannot be created: {holder} is not a directory", False)]
    if not os.access(holder, os.W_OK | os.X_OK):
        return [(f"{directory} does not exist and {me} cannot create it in {holder}: "
                 f"install -d -m 0700 -o {me} {directory}", False)]
    return []


def _holder_findings(holder: Path) -> list[tuple[str, bool]]:
    """A directory every account can write to lets any of them replace the log directory
    (and read or forge records) unless its sticky bit stops renames, as on /tmp."""
    try:
        mode = holder.stat().st_mode
    except OSError:
        return []
    if not mode & stat.S_IWOTH:
        return []
    if not mode & stat.S_ISVTX:
        return [(f"{holder} is writable by every account: any of them could replace the log "
                 f"directory: use one that only the proxy's account can write, such as "
                 f"{_SUGGESTED}", False)]
    return [(f"{holder} is writable by every account (like /tmp): another account can take the "
             f"name first, and it may be emptied at boot: prefer {_SUGGESTED}", True)]


def _keys_of(node: yaml.Node | None) -> set[str]:
    """The keys a mapping node names (none for anything else), before it is read."""
    if not isinstance(node, yaml.MappingNode):
        return set()
    return {key.value for key, _value in node.value if isinstance(key, yaml.ScalarNode)}
