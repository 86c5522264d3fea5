"""Open a report in headless Chromium (Playwright), check every image loaded, screenshot it.

Used by the tests and ``benchmarks/screenshot_report.py``. Playwright is a development
dependency (``pip install finalmlp[dev]``), imported only when a check runs; the browser is a
system Chromium: ``$FINALMLP_CHROMIUM``, else ``chromium``, ``chromium-browser`` or
``google-chrome`` on the PATH.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_ENV = "FINALMLP_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Playwright adds --headless. No sandbox: CI runs as root. The rest keep Chromium off the
# network (its background services only get refused connections on a closed machine).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)
# Every <img>: did it finish loading and decode to a real bitmap?
IMAGES_SCRIPT = """
() => Array.from(document.images).map(img => ({
    alt: img.alt, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth
}))
"""


@dataclass(frozen=True)
class BrowserCheck:
    """What Chromium saw: the number of images, those that loaded, the alt text of the others."""

    images: int
    loaded: int
    broken: list[str]
    screenshot: Path

    @property
    def ok(self) -> bool:
        return self.images > 0 and self.loaded == self.images


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None when there is none."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if Path(configured).is_file() else shutil.which(configured)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def check_report(
    report: Path, screenshot: Path, executable: str, timeout_s: float = 60
) -> BrowserCheck:
    """Load ``report`` (file://) in headless Chromium, list its images, save a full-page PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(Path(report).resolve().as_uri(), timeout=timeout_s * 1000, wait_until="load")
            images = page.evaluate(IMAGES_SCRIPT)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    broken = [str(image["alt"]) for image in images if not image["loaded"]]
    return BrowserCheck(len(images), len(images) - len(broken), broken, Path(screenshot))
