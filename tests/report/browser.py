"""Open a report page in the system's headless Chromium (playwright) and collect what happened."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

FIGURE_STATE = """() => Array.from(document.querySelectorAll('.hs-figure')).map(div => ({
  id: div.id,
  hidden: div.closest('[hidden]') !== null,
  svg: div.querySelectorAll('svg.main-svg').length,
  marks: div.querySelectorAll('.hm image, g.hm, .scatterlayer .point').length,
  width: div.getBoundingClientRect().width,
  height: div.getBoundingClientRect().height,
}))"""


@dataclass
class PageVisit:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    viewer_tokens: list[list[str]] = field(default_factory=list)
    text: str = ""


def visit(page_path: Path, screenshot: Path | None = None, full_page: bool = True) -> PageVisit:
    """Load the page from file://, record console errors, requests and dialogs, read the DOM."""
    from playwright.sync_api import sync_playwright

    seen = PageVisit()
    url = Path(page_path).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
        page.on("request", lambda r: seen.requests.append(r.url) if r.url != url else None)
        page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
        page.goto(url, wait_until="load")
        page.wait_for_timeout(500)
        seen.figures = page.evaluate(FIGURE_STATE)
        seen.viewer_tokens = page.evaluate(
            "() => Array.from(document.querySelectorAll('.hs-viewer')).map("
            "v => Array.from(v.querySelectorAll('th.hs-src')).map(t => t.textContent))"
        )
        seen.text = page.inner_text("body")
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=full_page)
        browser.close()
    return seen


@contextmanager
def opened(page_path: Path, errors: list[str] | None = None):
    """A playwright page showing the report (console errors and page errors go to `errors`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        if errors is not None:
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(300)
        try:
            yield page
        finally:
            browser.close()


def screenshot_sections(page_path: Path, out_dir: Path, sections: dict[str, str]) -> list[Path]:
    """PNG screenshots of page elements: {file stem: CSS selector}; used for docs/."""
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(800)
        for stem, selector in sections.items():
            path = Path(out_dir) / f"{stem}.png"
            page.locator(selector).first.screenshot(path=str(path))
            written.append(path)
        browser.close()
    return written
