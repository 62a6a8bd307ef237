"""Closing the usual ways around the filter, as far as a web proxy can.

Host lists only work when the proxy knows the host.  A learner who connects to an IP address,
to an odd port where a VPN or proxy listens, or who names one host to the proxy and another
in the TLS handshake, sidesteps them.  The rules here refuse those connections; addon.py
applies them (http_connect, tls_clienthello) and addon_circumvention.py applies the ones that
need a whole request.  Knows nothing of mitmproxy.

- **IP literals** (`connect.block_ip_literals`): a CONNECT, or a plain HTTP request, whose host
  is an IP address is refused, unless the address is listed under `allow:` (an intranet
  server reached by address).
- **Ports** (`connect.allowed_ports`): a CONNECT to any other port is refused; empty = any.
- **SNI mismatch** (always): when the ClientHello names a different host from the CONNECT and
  the tunnel would not be intercepted (either name is a pass-through host), it is refused,
  because nothing would ever check the name that was not decided.

Encrypted DNS.  DNS is not HTTP, so what this proxy can do is limited and stated plainly:
- it **can** block the DNS-over-HTTPS resolvers themselves (the `doh` list), since a browser
  using the proxy sends its DoH requests through it too;
- it **can** answer Firefox's canary domain `use-application-dns.net` itself when it is asked
  over HTTP (the answer says "does not exist", never reaches the internet), and, when the
  gateway also runs mitmproxy's DNS mode as the clients' resolver (`--mode dns@53`), answer the
  canary with a real NXDOMAIN, which is what makes Firefox keep DoH off.  Apple's equivalent
  for iCloud Private Relay (`mask.icloud.com`, `mask-h2.icloud.com`) is answered the same way;
- it **cannot** make Firefox see NXDOMAIN from a resolver it does not run: the centre's own
  resolver must answer the canary, and DoT (port 853) and QUIC (UDP 443) must be dropped at
  the firewall.  docs/circumvention.md is the checklist.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from webpolicy.engine.decision import Decision
from webpolicy.lists import domainindex
from webpolicy.lists.canonical import canonical_host, is_plain_name
from webpolicy.policy.model import ConnectRules

__all__ = ["Violation", "connect_violation", "ip_literal_violation", "sni_violation",
           "is_ip_literal", "is_canary", "is_dns_canary", "refusal", "CANARY_ANSWER", "LIST"]

LIST = "connect"            # the `list` of a refusal in the log and metrics
SEVERITY = "medium"

IP_LITERAL = "ip_literal"
PORT = "port"
SNI_MISMATCH = "sni_mismatch"
_CATEGORIES = {
    IP_LITERAL: "Connection to an IP address instead of a site name",
    PORT: "Connection to a port that is not allowed",
    SNI_MISMATCH: "Connection naming a different site in its TLS handshake",
}

# Firefox: a resolver that answers NXDOMAIN (or no address) for this name turns DoH off.
CANARY = "use-application-dns.net"
# Names a network answers NXDOMAIN for to switch encrypted DNS or relays off: Firefox's
# canary, and Apple's for iCloud Private Relay.
DNS_CANARIES = frozenset({CANARY, "mask.icloud.com", "mask-h2.icloud.com"})

CANARY_ANSWER = (
    f"{CANARY}: this network answers Firefox's DNS-over-HTTPS canary as a name that does not "
    "exist (NXDOMAIN), so Firefox keeps DNS-over-HTTPS off here.\n"
    "This answer comes from the web filter; the request was not sent anywhere.\n"
).encode()
CANARY_STATUS = 502           # what the proxy answers for any name that does not resolve



@dataclass(frozen=True, slots=True)
class Violation:
    rule: str          # ip_literal | port | sni_mismatch
    entry: str         # what was seen, e.g. "203.0.113.9:443" or "bank.example -> other.example"

    @property
    def category(self) -> str:
        return _CATEGORIES[self.rule]


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address in any form a client may write it (0x7f.1, [::1])."""
    if is_plain_name(host):
        return False        # the usual name: no parse
    try:
        ipaddress.ip_address(canonical_host(host))
    except ValueError:
        return False
    return True


# is_ip_literal for a host already in canonical form (a dotted quad, or IPv6 with colons): the
# per-request check, a tenth of is_ip_literal's cost.  The index's own test for its names.
is_canonical_ip = domainindex.is_ip_literal


def ip_literal_violation(host: str, rules: ConnectRules) -> Violation | None:
    if rules.block_ip_literals and is_ip_literal(host):
        return Violation(IP_LITERAL, canonical_host(host))
    return None


def connect_violation(host: str, port: int, rules: ConnectRules) -> Violation | None:
    """What is wrong with `CONNECT host:port` for a profile with these rules, if anything."""
    found = ip_literal_violation(host, rules)
    if found:
        address = f"[{found.entry}]" if ":" in found.entry else found.entry
        return Violation(IP_LITERAL, f"{address}:{port}")
    if rules.allowed_ports and port not in rules.allowed_ports:
        return Violation(PORT, f"{host}:{port}")
    return None


def sni_violation(connect_host: str, sni: str | None) -> Violation | None:
    """A ClientHello naming a different host from the CONNECT (no SNI is not a mismatch)."""
    if not sni:
        return None
    try:
        same = canonical_host(connect_host) == canonical_host(sni)
    except ValueError:
        same = False
    return None if same else Violation(SNI_MISMATCH, f"{connect_host} -> {sni}")


def is_canary(host: str) -> bool:
    return host == CANARY


def is_dns_canary(name: str) -> bool:
    """DNS question names arrive without a trailing dot in mitmproxy, but be sure."""
    return name.rstrip(".").lower() in DNS_CANARIES


def refusal(violation: Violation, profile: str, reason: str, version: str) -> Decision:
    """The block decision for a violation: logged and counted like a list block."""
    return Decision("block", profile, reason, list=LIST, category=violation.category,
                    severity=SEVERITY, match=violation.rule, entry=violation.entry,
                    policy_version=version)
