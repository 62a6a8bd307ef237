"""Big lists through real mitmdump: a reload to a 200k-entry list keeps serving, the new entries
block once it is in force, and a restart starts from the compiled cache.

How long requests wait during the reload is measured by scripts/bench_proxy.py (5M entries),
not asserted here; what is asserted is that none fails.
"""

from __future__ import annotations

import http.client
import os
import random
import threading
import time

import pytest

from .conftest import LEARNER_IP, POLICY

pytestmark = pytest.mark.e2e

BIG = 200_000
BULK_POLICY = POLICY.replace(
    "block: [ctiru, adult, gambling]", "block: [ctiru, adult, gambling, bulk]").replace(
    "  social: {{", "  bulk: {{category: Bulk test list, format: domains, "
    "sources: [lists/bulk.txt]}}\n  social: {{")


def bulk_names(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(36):x}{i}.{rng.choice(['com', 'net', 'org', 'co.uk'])}"
            for i in range(n)]


class Prober(threading.Thread):
    """A learner's browser: an allowed page through the proxy every 10 ms, keep-alive."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.results: list[tuple[float, int | str]] = []   # (seconds, status or error)
        self.done = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.done.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20,
                                                      source_address=(LEARNER_IP, 0))
                conn.request("GET", "http://news.test/", headers={"Host": "news.test"})
                response = conn.getresponse()
                response.read()
                outcome: int | str = response.status
            except (OSError, http.client.HTTPException) as exc:
                outcome, conn = repr(exc), None
            self.results.append((time.monotonic() - started, outcome))
            self.done.wait(0.01)

    def stop(self) -> list[tuple[float, int | str]]:
        self.done.set()
        self.join()
        return self.results


def test_reload_to_a_big_list_keeps_serving_and_restart_uses_the_cache(make_proxy):
    proxy = make_proxy(policy=BULK_POLICY, lists={"lists/bulk.txt": "bulk-seed.test\n"})
    assert proxy.curl("http://bulk-seed.test/", client_ip=LEARNER_IP).status == 403
    names = bulk_names(BIG)
    prober = Prober(proxy.port)
    prober.start()
    time.sleep(0.5)
    bulk = proxy.directory / "lists" / "bulk.txt"
    staged = bulk.with_suffix(".new")
    staged.write_text("\n".join(names) + "\n")
    os.replace(staged, bulk)
    newest = names[-1]
    deadline = time.monotonic() + 90
    while proxy.curl(f"http://{newest}/", client_ip=LEARNER_IP).status != 403:
        assert time.monotonic() < deadline, f"the {BIG}-entry list never came into force:\n" \
                                            f"{proxy.output}"
        time.sleep(0.1)
    time.sleep(0.5)
    results = prober.stop()

    failed = [outcome for _, outcome in results if outcome != 200]
    assert not failed, f"requests failed during the reload: {failed[:5]}"
    assert len(results) > 20
    longest = max(seconds for seconds, _ in results)
    print(f"{len(results)} requests during the reload, longest {longest * 1000:.1f} ms")
    for name in names[:: BIG // 7] + [f"www.{names[3]}"]:
        assert proxy.curl(f"http://{name}/", client_ip=LEARNER_IP).status == 403, name
    assert proxy.curl("http://news.test/", client_ip=LEARNER_IP).status == 200
    assert proxy.curl("http://ctiru-host.test/terror/page", client_ip=LEARNER_IP).status == 451
    assert f"bulk: {BIG}" in proxy.output
    cache = proxy.confdir / "webpolicy-cache"
    assert len(list(cache.glob("*.wpidx"))) == 2       # the set in force and the one before

    compiles = proxy.output.count("lists compiled")
    proxy.stop()
    proxy.start()
    assert proxy.curl(f"http://{names[5]}/", client_ip=LEARNER_IP).status == 403
    assert proxy.output.count("lists compiled") == compiles, "the restart compiled again"
