"""Headless Chromium for the end-to-end tests that look at a page: a DOM dump, a screenshot,
and a check that the screenshot is not blank (without Pillow)."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

from .proxy import REPO

ARTIFACTS = REPO / "test-artifacts"


def png_size_and_ink(path: Path) -> tuple[int, int, float]:
    """(width, height, share of non-white bytes) of an 8-bit RGB(A) PNG, without Pillow."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, offset = b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            idat += data[offset + 8:offset + 8 + length]
        offset += 12 + length
    raw = zlib.decompress(idat)
    ink = sum(1 for b in raw[::7] if b < 0xF0) / len(raw[::7])
    return width, height, ink


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90)


def screenshot(page: Path, name: str, size: tuple[int, int], profile: Path) -> Path:
    """A screenshot of a local page into test-artifacts/, checked to be the size asked for
    and not blank."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    result = chromium(f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}",
                      "--hide-scrollbars", page.as_uri(), profile=profile)
    assert result.returncode == 0 and shot.exists(), result.stderr
    width, height, ink = png_size_and_ink(shot)
    assert (width, height) == size
    assert ink > 0.03, f"the screenshot looks blank ({ink:.1%} ink)"
    return shot


def click_and_wait(driver, element, timeout: float = 20) -> None:
    """Click a Selenium element and wait until the page it leads to has replaced this one.

    Reading too early finds the old page; navigating away too early cancels a POST in
    flight (a sign-in failure the throttle never counts, a case never saved).  The old
    document is marked before the click and the wait ends once a complete document without
    the mark is there; Chromium may refuse a query while the documents change over, so
    such errors are retried, not failed."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait
    driver.execute_script("document.documentElement.dataset.leaving = 'yes'")
    element.click()
    WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return document.readyState === 'complete' && "
                                   "!document.documentElement.dataset.leaving"))
