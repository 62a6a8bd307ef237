"""What the alert rules remember (safeguarding/alertstate.py): the same rules in memory and in
the database the workers share; the shared one across real processes, private on disk, and
falling back to memory when it cannot be used."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from tests.unit.safeguarding.test_alerts import record
from webpolicy.policy.model import AlertSettings
from webpolicy.safeguarding.alerts import REPEAT_CATEGORY, AlertRules
from webpolicy.safeguarding.alertstate import FILE_NAME, MemoryState, SharedState

WINDOW = 600.0


@pytest.fixture(params=["memory", "shared"])
def state(request, tmp_path):
    made = MemoryState() if request.param == "memory" else SharedState(tmp_path / FILE_NAME)
    yield made
    if isinstance(made, SharedState):
        made.close()


def test_blocks_reach_the_threshold_once_then_count_again(state):
    assert [state.block("ann", 1000.0 + i, WINDOW, 3) for i in range(7)] == [0, 0, 3, 0, 0, 3, 0]
    assert state.block("bob", 1000.0, WINDOW, 3) == 0             # per person


def test_blocks_older_than_the_window_do_not_count(state):
    state.block("ann", 1000.0, WINDOW, 3)
    state.block("ann", 1001.0, WINDOW, 3)
    assert state.block("ann", 1001.0 + WINDOW + 1, WINDOW, 3) == 0


def test_one_alert_per_person_and_category_per_window(state):
    assert state.claim("ann", "Gambling", 1000.0, WINDOW)
    assert not state.claim("ann", "Gambling", 1000.0 + WINDOW - 1, WINDOW)
    assert state.claim("ann", "Adult", 1001.0, WINDOW)
    assert state.claim("bob", "Gambling", 1001.0, WINDOW)
    assert state.claim("ann", "Gambling", 1000.0 + WINDOW, WINDOW)


def _blocks_in_another_process(path: str, who: str, times: list[float], out) -> None:
    shared = SharedState(Path(path))
    out.put([shared.block(who, t, WINDOW, 4) for t in times])
    out.put(shared.claim(who, REPEAT_CATEGORY, times[0], WINDOW))
    shared.close()


def test_workers_add_up_to_one_count_and_one_alert(tmp_path):
    """Two real processes, each blocking the same learner twice, concurrently: four blocks in
    all, so exactly one of them sees the threshold of 4; and of their two claims for the
    same alert exactly one wins."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    path = str(tmp_path / FILE_NAME)
    workers = [context.Process(target=_blocks_in_another_process,
                               args=(path, "10.0.0.7", [1000.0 + n, 1002.0 + n], out))
               for n in range(2)]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=30) for _ in range(4)]
    for worker in workers:
        worker.join(30)
    counts = [c for item in results if isinstance(item, list) for c in item]
    claims = [item for item in results if isinstance(item, bool)]
    assert sorted(counts) == [0, 0, 0, 4]
    assert sorted(claims) == [False, True]


def test_the_database_is_private(tmp_path):
    shared = SharedState(tmp_path / FILE_NAME)
    shared.block("ann", 1000.0, WINDOW, 3)
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    shared.close()


def test_an_unusable_database_falls_back_to_memory_and_says_so(tmp_path, capsys):
    shared = SharedState(tmp_path / "missing-directory" / FILE_NAME)
    assert [shared.block("ann", 1000.0 + i, WINDOW, 2) for i in range(2)] == [0, 2]
    assert "counts repeat attempts alone" in capsys.readouterr().err


def test_two_workers_rules_raise_one_repeat_alert(tmp_path):
    """AlertRules of two workers over one database: the blocks of both count, and the
    alert, once raised, is suppressed in the other."""
    settings = AlertSettings(repeat_count=3, repeat_minutes=10)
    clock = iter(range(1000, 2000)).__next__
    rules = [AlertRules(settings, clock, SharedState(tmp_path / FILE_NAME)) for _ in range(2)]
    outcomes = [rules[n % 2].consider(record(user="", client_ip="10.0.0.9")) for n in range(6)]
    raised = [alert for alert, _ in outcomes if alert is not None]
    assert [a.trigger for a in raised] == ["repeat"]
    assert raised[0].attempts == 3
    suppressed = [s for _, found in outcomes for s in found]
    assert [s.trigger for s in suppressed] == ["repeat"]          # the second threshold
    for r in rules:
        r.state.close()
    assert os.path.exists(tmp_path / FILE_NAME)
