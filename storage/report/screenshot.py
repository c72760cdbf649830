"""A PNG screenshot of a report page, taken by headless Chromium (for READMEs and issues).

Optional: it needs the ``playwright`` package (a dev dependency) and a Chromium on the machine
(Debian: ``apt-get install chromium``; no browser is downloaded). The page itself needs neither.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Flags for a closed machine: no sandbox as root, no GPU, and no background connections.
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
)  # fmt: skip


class ScreenshotError(RuntimeError):
    """No browser to take it with; says what to install."""


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def take_screenshot(page: Path, out: Path, *, width: int = 1000, height: int = 1400) -> Path:
    """The top ``height`` pixels of ``page`` at ``width``, as PNG at ``out``."""
    browser_path = find_chromium()
    if browser_path is None:
        raise ScreenshotError("no Chromium found for the screenshot (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ScreenshotError(
            "the screenshot needs playwright: pip install playwright (no browser download)"
        ) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=list(CHROMIUM_ARGS))
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.goto(page.resolve().as_uri())
            tab.screenshot(path=str(out))
        finally:
            browser.close()
    return out
