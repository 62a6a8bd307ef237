"""`webpolicy export --html`: the annual-review document for the shipped policy, opened in real
Chromium under its own Content-Security-Policy, and screenshotted."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .browser import chromium, screenshot
from .proxy import REPO


def test_the_review_document_renders_in_chromium(tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed (scripts/install-system-deps.sh)")
    policy = tmp_path / "policy.yaml"
    shutil.copytree(REPO / "blocklists", tmp_path / "blocklists")
    shutil.copy(REPO / "policy.yaml", policy)
    page = tmp_path / "review.html"
    done = subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "export", "--html",
                           str(page), "--policy", str(policy)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr
    assert "Profiles and who gets them" in dom.stdout and "Sign-off" in dom.stdout
    assert "ctiru-test.webpolicy.invalid" not in dom.stdout, "a statutory entry on paper"

    screenshot(page, "policy-review.png", (1280, 2400), profile=tmp_path / "profile-shot")
