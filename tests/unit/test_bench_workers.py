"""scripts/bench_workers.py drives `webpolicy run --workers N` with bench_proxy's options,
less what cannot be shared by workers (the reverse:https listener, which serves HTTP/3 on UDP)
and what `run` gives itself (the entry script, the policy option)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

from tests.unit.helpers import REPO


def load_script():
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_workers",
                                                  REPO / "scripts" / "bench_workers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_gateway_is_started_by_webpolicy_run_with_n_workers(tmp_path: Path):
    bench = load_script()
    upstream = SimpleNamespace(http_port=1001, https_port=1002)
    gateway = bench.Gateway(bench.Config("2w", True), tmp_path / "2w", upstream,
                            tmp_path / "cache", 2001, 2002, workers=2)
    gateway.policy_path = tmp_path / "policy.yaml"
    command = gateway.command()
    assert Path(command[0]).name == "webpolicy"
    assert command[1:6] == ["run", "--policy", str(gateway.policy_path), "--workers", "2"]
    assert "reverse:http://127.0.0.1:1001@2001" in command
    assert not any("https" in arg for arg in command)
    assert "-s" not in command
    assert not any(arg.startswith("webpolicy_policy=") for arg in command)
    assert f"webpolicy_cache_dir={tmp_path / 'cache'}" in command
    for flag, value in zip(command, command[1:]):
        if flag == "--set":
            assert "=" in value
