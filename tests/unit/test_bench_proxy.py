"""scripts/bench_proxy.py: the statistics its ratios are reported with."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_proxy", REPO / "scripts" / "bench_proxy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench_proxy = load_script()


def test_too_few_rounds_give_no_interval():
    assert bench_proxy.median_interval([0.9, 1.1, 1.0]) == (1.0, None)


def test_the_interval_brackets_the_median():
    values = [0.8 + i / 100 for i in range(30)]
    median, (low, high) = bench_proxy.median_interval(values)
    assert low < median < high
    assert low in values and high in values


def test_the_interval_covers_the_true_median_at_least_95_percent_of_the_time():
    rng = random.Random(7)
    for n in (8, 20, 60):
        covered = 0
        for _ in range(2000):
            _, (low, high) = bench_proxy.median_interval([rng.gauss(0.95, 0.2) for _ in range(n)])
            covered += low <= 0.95 <= high
        assert covered / 2000 >= 0.94, (n, covered)


def test_the_baselines_differ_from_bare_only_in_what_they_stand_for(tmp_path):
    """noop adds a script add-on, lazy one option: nothing else may differ from bare."""
    upstream = bench_proxy.Nginx(tmp_path / "nginx")
    upstream.http_port, upstream.https_port = 1, 2

    def command(config):
        proxy = bench_proxy.Proxy(config, tmp_path / config.name, upstream, tmp_path / "cache",
                                  http_port=3, https_port=4)
        proxy.directory.mkdir(parents=True, exist_ok=True)
        return proxy.command()

    bare = command(bench_proxy.Config("bare", False))
    lazy = command(bench_proxy.Config("lazy", False, options=["connection_strategy=lazy"]))
    noop = command(bench_proxy.Config("noop", False, script=bench_proxy.NOOP_ADDON))
    assert lazy == bare + ["--set", "connection_strategy=lazy"]
    assert noop[:len(bare)] == bare and noop[len(bare)] == "-s" and len(noop) == len(bare) + 2
