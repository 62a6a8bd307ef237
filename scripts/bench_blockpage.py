#!/usr/bin/env python3
"""Benchmark what the review form adds to an HTML block page, on the event loop.

A browser's blocked page is rendered in the proxy's hook (proxy/gate.py `block`): with
block_page.review_requests the page also carries a token signed for the reference and client
(safeguarding/reviewrequests.py).  This times, in one process and interleaved, the page
without the form (the baseline), the page with it (token included), and the token alone, and
prints microseconds and the ratio to the baseline.  Measured here, never asserted in a test.

    .venv/bin/python scripts/bench_blockpage.py [--rounds 7] [--number 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons"))

from webpolicy.engine.decision import Decision  # noqa: E402
from webpolicy.policy.model import BlockPageSettings  # noqa: E402
from webpolicy.proxy import blockpage  # noqa: E402
from webpolicy.safeguarding.reviewrequests import ReviewTokens, Ticket  # noqa: E402

DECISION = Decision("block", "learner", "network 10.10.0.0/16", list="gambling",
                    category="Gambling", severity="medium", match="host", entry="bet.example",
                    policy_version="2026-12-01")
ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
URL, HOST, REFERENCE = "https://www.bet.example/slots?game=7", "www.bet.example", "WP-7K3M9Q2XTB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    without = BlockPageSettings(review_requests=False)
    with_form = BlockPageSettings()
    tokens = ReviewTokens()

    def token() -> str:
        return tokens.issue(Ticket(REFERENCE, "10.10.4.17", "bob", "Library PC 3", "learner",
                                   "network 10.10.0.0/16", HOST, "gambling", "Gambling",
                                   "2026-12-01", time.time()))

    cases = {
        "page without the form (baseline)":
            lambda: blockpage.render(DECISION, REFERENCE, URL, HOST, without, ACCEPT),
        "page with the form and its token":
            lambda: blockpage.render(DECISION, REFERENCE, URL, HOST, with_form, ACCEPT,
                                     review_token=token()),
        "the token alone": token,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):                      # interleaved: the same machine load
        for name, case in cases.items():
            times[name].append(timeit.timeit(case, number=args.number) / args.number * 1e6)
    base = statistics.median(times["page without the form (baseline)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<36} {median:7.1f} us  x{median / base:.2f}")


if __name__ == "__main__":
    main()
