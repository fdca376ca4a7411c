"""The book builds cleanly and every page works offline in a real browser.

One build per test session (`built_book`), shared by all tests here:

- ``jupyter-book build . -n -W --keep-going`` exits 0 with no warning; every page of
  ``_toc.yml`` has its HTML file; every entry of the bibliography files is cited; no page or
  style sheet loads a script, style sheet, font or image from the network;
- `test_every_page_in_chromium`: Debian's Chromium, driven by Playwright, opens every page from
  a local server and checks: no console error, no failed request, no request to any host but
  127.0.0.1, math typeset by MathJax wherever there is math, every image loaded.

Set ``BOOK_SCREENSHOTS=/some/dir`` to save a full-page screenshot of every page there.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
import yaml

if TYPE_CHECKING:  # playwright is imported lazily: without it the browser test skips
    from playwright.sync_api import BrowserContext, ConsoleMessage, Request, Response, Route

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOST = "127.0.0.1"
# An absolute or protocol-relative URL: anything a browser would fetch from another host.
REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class Build:
    returncode: int
    log: str
    seconds: float
    html: Path


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Build the book once, from the repository root, into a temporary directory."""
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.is_file():
        pytest.fail(f"jupyter-book not found next to {sys.executable}")
    cmd = [str(jupyter_book), "build", str(ROOT), "--path-output", str(out)]
    cmd += ["-n", "-W", "--keep-going"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    log = ANSI.sub("", proc.stdout + proc.stderr)
    return Build(proc.returncode, log, seconds, out / "_build" / "html")


def build_report(build: Build) -> str:
    """The build's warnings and errors, then the end of its log."""
    lines = build.log.splitlines()
    flagged = [line for line in lines if "WARNING" in line or "ERROR" in line]
    return "\n".join(flagged + ["--- end of the build log ---"] + lines[-15:])


def toc_files() -> list[str]:
    """Every document named in ``_toc.yml``: the root and each ``file:`` entry, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in toc.items() if key != "root"})
    return files


def html_pages(html: Path) -> list[Path]:
    """Every page of the built site (not the theme's templates under ``_static``)."""
    return sorted(
        page for page in html.rglob("*.html") if not page.relative_to(html).parts[0].startswith("_")
    )


class _Loads(HTMLParser):
    """Collect the URLs an HTML page makes the browser fetch (not the links a reader follows)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        if tag == "link":
            self.urls.append(a.get("href", ""))
        elif tag in ("script", "img", "iframe", "source", "audio", "video", "embed", "track"):
            self.urls.append(a.get("src", ""))
            self.urls += [part.split()[0] for part in a.get("srcset", "").split(",") if part]
        elif tag == "object":
            self.urls.append(a.get("data", ""))
        self.urls += CSS_URL.findall(a.get("style", ""))
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += CSS_URL.findall(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def remote_loads(page: Path) -> list[str]:
    parser = _Loads()
    parser.feed(page.read_text(encoding="utf-8"))
    return [url for url in parser.urls if REMOTE.match(url)]


def require_build(build: Build) -> None:
    if build.returncode != 0:
        pytest.fail(f"the book build failed (exit {build.returncode}):\n{build_report(build)}")


@pytest.mark.book
def test_book_builds_without_warnings(built_book: Build) -> None:
    assert built_book.returncode == 0, f"the build failed:\n{build_report(built_book)}"
    assert "WARNING" not in built_book.log, f"the build warned:\n{build_report(built_book)}"
    print(f"book built in {built_book.seconds:.1f} s")


@pytest.mark.book
def test_every_toc_page_has_html(built_book: Build) -> None:
    require_build(built_book)
    missing = [f for f in toc_files() if not (built_book.html / f"{f}.html").is_file()]
    assert not missing, f"toc pages without an HTML file: {missing}"


@pytest.mark.book
def test_every_reference_is_cited(built_book: Build) -> None:
    # The bibliography lists only cited entries, silently: an uncited one is a stale reference.
    require_build(built_book)
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    bib = "".join((ROOT / f).read_text(encoding="utf-8") for f in config["bibtex_bibfiles"])
    keys = re.findall(r"^@\w+\{([^,\s]+),", bib, re.MULTILINE)
    listed = (built_book.html / "book" / "bibliography.html").read_text(encoding="utf-8")
    uncited = [key for key in keys if f'id="cite-{key}"' not in listed]
    assert keys and not uncited, f"bibliography entries cited nowhere: {uncited}"


@pytest.mark.book
def test_nothing_loads_from_the_network(built_book: Build) -> None:
    require_build(built_book)
    assert (built_book.html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    remote = {
        str(page.relative_to(built_book.html)): urls
        for page in html_pages(built_book.html)
        if (urls := remote_loads(page))
    }
    assert not remote, f"pages load resources from the network: {remote}"
    remote_css = {
        str(css.relative_to(built_book.html)): urls
        for css in built_book.html.rglob("*.css")
        if (urls := [u for u in CSS_URL.findall(css.read_text("utf-8")) if REMOTE.match(u)])
    }
    assert not remote_css, f"style sheets load resources from the network: {remote_css}"


@pytest.fixture(scope="session")
def site(built_book: Build) -> Iterator[str]:
    """Serve the built site from 127.0.0.1 on a free port, in a background thread."""
    require_build(built_book)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(built_book.html))
    server = http.server.ThreadingHTTPServer((LOCAL_HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOCAL_HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def chromium_or_skip() -> None:
    """Skip without Chromium or Playwright, except on CI (CI=true), where that is a failure."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} not found (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run on CI: {problem}")
        pytest.skip(f"browser test skipped: {problem}")


# Runs in the page: MathJax has finished, fonts are in, every image has settled.
SETTLE = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
    }
    await document.fonts.ready;
    const images = Array.from(document.images);
    images.forEach((img) => { img.loading = "eager"; });
    await Promise.all(images.map((img) => img.complete ? null : new Promise((done) => {
        img.addEventListener("load", done, {once: true});
        img.addEventListener("error", done, {once: true});
    })));
}"""

INSPECT = """() => {
    const math = Array.from(document.querySelectorAll(".math"));
    return {
        math: math.length,
        untypeset: math.filter((el) => !el.querySelector("mjx-container"))
                       .map((el) => el.textContent.slice(0, 80)),
        containers: document.querySelectorAll("mjx-container").length,
        tex_errors: Array.from(document.querySelectorAll("mjx-merror"))
                         .map((el) => el.getAttribute("data-mjx-error") || el.textContent),
        broken_images: Array.from(document.images)
            .filter((img) => !(img.complete && img.naturalWidth > 0))
            .map((img) => img.getAttribute("src")),
    };
}"""


def visit(context: BrowserContext, url: str, screenshot: Path | None) -> tuple[list[str], bool]:
    """Open one page; return what went wrong on it and whether it has math."""
    found: list[str] = []
    page = context.new_page()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            found.append(f"console error: {msg.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            found.append(f"HTTP {response.status}: {response.url}")

    def on_request(request: Request) -> None:
        target = urlparse(request.url)
        if target.scheme in ("http", "https") and target.hostname != LOCAL_HOST:
            found.append(f"request to another host: {request.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: found.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: found.append(f"request failed: {req.url} {req.failure}"))
    page.on("response", on_response)
    page.on("request", on_request)
    page.goto(url, wait_until="networkidle")
    page.evaluate(SETTLE)
    page.wait_for_load_state("networkidle")
    seen = page.evaluate(INSPECT)
    if seen["math"] and (seen["untypeset"] or not seen["containers"]):
        found.append(f"math not typeset: {seen['untypeset'][:5]}")
    if seen["tex_errors"]:
        found.append(f"TeX errors: {seen['tex_errors'][:5]}")
    if seen["broken_images"]:
        found.append(f"images not loaded: {seen['broken_images']}")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return found, bool(seen["math"])


@pytest.mark.book
@pytest.mark.browser
def test_every_page_in_chromium(built_book: Build, site: str) -> None:
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ["BOOK_SCREENSHOTS"]) if os.environ.get("BOOK_SCREENSHOTS") else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    pages = [p.relative_to(built_book.html).as_posix() for p in html_pages(built_book.html)]
    problems: dict[str, list[str]] = {}
    math_pages = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})

        def local_only(route: Route, request: Request) -> None:
            # Never let a page reach the network, even when the test is about to fail.
            target = urlparse(request.url)
            if target.scheme in ("data", "blob", "about") or target.hostname == LOCAL_HOST:
                route.continue_()
            else:
                route.abort()

        context.route("**/*", local_only)
        for name in pages:
            shot = shots / (name.replace("/", "_") + ".png") if shots else None
            found, has_math = visit(context, f"{site}/{name}", shot)
            if found:
                problems[name] = found
            if has_math:
                math_pages.append(name)
        browser.close()

    assert not problems, "pages with problems:\n" + "\n".join(
        f"{name}:\n  " + "\n  ".join(found) for name, found in problems.items()
    )
    assert "book/notation.html" in math_pages, "the notation page has no typeset math"
    # Chapter 6 derives every formula of the book and Lab 6 asks for five of them: both pages
    # must have math, all of it typeset (checked per page above).
    for page in ("chapters/06-mathematics.html", "labs/lab06-mathematics.html"):
        assert page in math_pages, f"{page} has no typeset math"
    for chapter in ("chapters/03-compression.html", "labs/lab03-compression.html",
                    "chapters/05-hybrid.html", "labs/lab05-hybrid.html"):
        assert chapter in math_pages, f"{chapter} has no typeset math"


def faq_answers() -> dict[str, str]:
    """Each bold question of book/faq.md with the answer paragraph under it."""
    text = (ROOT / "book" / "faq.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\*\*(.+?)\*\*\n(.+?)(?=\n\n|\Z)", text, re.MULTILINE | re.DOTALL))


def test_every_faq_answer_quotes_a_measured_number_and_links_to_it() -> None:
    answers = faq_answers()
    assert len(answers) >= 12, f"the FAQ answers {len(answers)} questions, fewer than 12"
    for question, answer in answers.items():
        assert "{glue:text}`" in answer, f"FAQ {question!r}: no number glued from a notebook"
        assert "{ref}`" in answer, f"FAQ {question!r}: no link to the cell that measures it"
        # outside glue roles and math, a decimal number would have been typed by hand
        bare = re.sub(r"\{glue:text\}`[^`]*`|\$[^$]*\$", "", answer)
        typed = re.findall(r"\d+\.\d+|\d+ ?µJ", bare)
        assert not typed, f"FAQ {question!r}: numbers typed by hand: {typed}"
