"""`python -m webpolicy.proxy.worker <mitmdump arguments>`: mitmdump as one of the workers of
`webpolicy run --workers N` (cli/supervisor.py starts it so).

The listener must bind with SO_REUSEPORT (reuseport.py), and mitmproxy binds it while it may
still be loading the `-s` script (scripts load in a task of their own), so the change cannot
be made from the add-on: it is made here, before mitmproxy starts, and then this process is
mitmdump, with the arguments it was given.  The add-on checks the sockets once they are up.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from webpolicy.proxy import reuseport


PR_SET_PDEATHSIG = 1            # linux/prctl.h


def follow_supervisor() -> None:
    """Be sent SIGTERM if the supervisor dies (even by SIGKILL): a worker left behind would
    go on holding a share of the port, unsupervised.  Linux only; elsewhere a no-op."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:        # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    follow_supervisor()
    try:
        reuseport.install()
    except reuseport.ReusePortError as exc:
        print(f"webpolicy worker: {exc}", file=sys.stderr)
        return 1
    from mitmproxy.tools.main import mitmdump  # after install(): nothing has bound yet
    return mitmdump(sys.argv[1:] if argv is None else argv) or 0


if __name__ == "__main__":
    sys.exit(main())
