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
