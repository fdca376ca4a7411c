"""The book builds cleanly and every page works offline in a real browser.

One build per test session (`built_book`), shared by all tests here:

- ``jupyter-book build . -n -W --keep-going`` exits 0 with no warning; every page of
  ``_toc.yml`` has its HTML file; every entry of the bibliography files is cited; no page or
  style sheet loads a script, style sheet, font or image from the network;
- `test_every_page_in_chromium`: Debian's Chromium, driven by Playwright, opens every page from
  a local server at 1280 px and checks: no console error, no failed request, no request to any
  host but 127.0.0.1, math typeset by MathJax wherever there is math, every image loaded; and the
  reader's layout: no code block or cell output scrolls sideways (``scrollWidth`` ≤
  ``clientWidth``; the failure names the page, the cell and its first line), every image has alt
  text, every figure has a caption (a MyST figure's, or an italic paragraph right under the
  cell), on every page without exception;
- `test_figures_in_dark_mode`: a chapter in the theme's dark mode, screenshotted: its figures
  keep a light backdrop on the dark page;
- `test_pdf_edition`: ``make pdf``'s build (XeLaTeX) gives one PDF holding every chapter's title,
  the Chinese one included, and the chapters' figures.

Set ``BOOK_SCREENSHOTS=/some/dir`` to save a full-page screenshot of every page there.
"""

from __future__ import annotations

import functools
import html
import http.server
import io
import json
import os
import re
import shutil
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
WIDTH = 1280  # the desktop width the layout checks run at


@dataclass(frozen=True)
class Build:
    returncode: int
    log: str
    seconds: float
    html: Path


def jupyter_book_build(out: Path, *options: str, timeout: float = 600) -> tuple[int, str, float]:
    """``jupyter-book build`` of the repository into `out`: exit code, log and seconds."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.is_file():
        pytest.fail(f"jupyter-book not found next to {sys.executable}")
    cmd = [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), *options]
    cmd += ["-n", "-W", "--keep-going"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    return proc.returncode, ANSI.sub("", proc.stdout + proc.stderr), seconds


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Build the book once, from the repository root, into a temporary directory."""
    out = tmp_path_factory.mktemp("book")
    return Build(*jupyter_book_build(out), out / "_build" / "html")


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
def test_every_chapter_says_how_to_run_it(built_book: Build) -> None:
    # book/_ext/runlocally.py puts the command under each chapter's title
    require_build(built_book)
    chapters = [f for f in toc_files() if f.startswith("chapters/")]

    def run_line(chapter: str) -> str:
        page = (built_book.html / f"{chapter}.html").read_text(encoding="utf-8")
        found = re.search(r'<p class="run-locally">(.*?)</p>', page, re.DOTALL)
        return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))) if found else ""

    silent = [f for f in chapters if f"jupyter lab {f}.ipynb" not in run_line(f)]
    assert chapters and not silent, f"chapters that do not say how to run them: {silent}"


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

# Runs in the page: what a reader would find wrong with its layout at this width.
LAYOUT = """() => {
    const cells = Array.from(document.querySelectorAll("div.cell"));
    const firstLine = (el) => (el.textContent.split("\\n").find((l) => l.trim()) || "")
        .trim().slice(0, 60);
    const where = (el) => {
        const cell = el.closest("div.cell");
        if (!cell) {
            return `code block «${firstLine(el)}»`;
        }
        const input = cell.querySelector(".cell_input pre");
        const part = el.closest(".cell_output") ? "output" : "code";
        return `cell ${cells.indexOf(cell) + 1} (${part} of «${input ? firstLine(input) : ""}»)`;
    };
    const article = document.querySelector("article") || document.documentElement;
    const boxes = Array.from(article.querySelectorAll("pre, .cell_output > *"));
    const wide = boxes.filter((el) => el.scrollWidth > el.clientWidth + 1)
        .map((el) => `${where(el)}: ${el.scrollWidth} px wide in a ${el.clientWidth} px box`);
    const images = Array.from(article.querySelectorAll("img"));
    const no_alt = images.filter((img) => !(img.getAttribute("alt") || "").trim())
        .map((img) => `${where(img)}: ${img.getAttribute("src")}`);
    const captioned = (img) => {
        const figure = img.closest("figure");
        if (figure) {
            return !!(figure.querySelector("figcaption") || {}).textContent;
        }
        const cell = img.closest("div.cell");
        const next = cell && cell.nextElementSibling;
        return !!(next && next.tagName === "P" && next.firstChild
                  && next.firstChild.nodeName === "EM");
    };
    // a figure is an image a cell drew or a figure directive placed, not an icon of the theme
    const figures = images.filter((img) => img.closest(".cell_output, figure"));
    const uncaptioned = figures.filter((img) => !captioned(img)).map(where);
    return {wide, no_alt, uncaptioned, images: images.length};
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


@dataclass
class Visit:
    """What one page showed: what went wrong on it, its layout problems, whether it has math."""

    found: list[str]
    layout: list[str]
    math: bool


def visit(context: BrowserContext, url: str, screenshot: Path | None) -> Visit:
    """Open one page and inspect it."""
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
    shown = page.evaluate(LAYOUT)
    layout = [f"scrolls sideways: {w}" for w in shown["wide"]]
    layout += [f"image without alt text: {w}" for w in shown["no_alt"]]
    layout += [f"figure without a caption: {w}" for w in shown["uncaptioned"]]
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return Visit(found, layout, bool(seen["math"]))


def local_only(route: Route, request: Request) -> None:
    """Never let a page reach the network, even when the test is about to fail."""
    target = urlparse(request.url)
    if target.scheme in ("data", "blob", "about") or target.hostname == LOCAL_HOST:
        route.continue_()
    else:
        route.abort()


@pytest.fixture(scope="session")
def browsed(built_book: Build, site: str) -> dict[str, Visit]:
    """Every page of the built book, opened in Chromium at 1280 px (once per session)."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ["BOOK_SCREENSHOTS"]) if os.environ.get("BOOK_SCREENSHOTS") else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    pages = [p.relative_to(built_book.html).as_posix() for p in html_pages(built_book.html)]
    visits = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": WIDTH, "height": 900})
        context.route("**/*", local_only)
        for name in pages:
            shot = shots / (name.replace("/", "_") + ".png") if shots else None
            visits[name] = visit(context, f"{site}/{name}", shot)
        browser.close()
    return visits


@pytest.mark.book
@pytest.mark.browser
def test_every_page_in_chromium(browsed: dict[str, Visit]) -> None:
    problems = {
        name: v.found + v.layout
        for name, v in browsed.items()
    }
    problems = {name: found for name, found in problems.items() if found}
    math_pages = [name for name, v in browsed.items() if v.math]
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


# Runs in the page: the luminance of the page background, and the box of its first figure.
FIRST_FIGURE = """() => {
    const img = document.querySelector("article .cell_output img");
    img.scrollIntoView({block: "center"});
    const r = img.getBoundingClientRect();
    return {theme: document.documentElement.dataset.theme,
            background: getComputedStyle(document.body).backgroundColor,
            box: {x: r.x, y: r.y, width: r.width, height: r.height}};
}"""


def luminance(rgb: tuple[float, ...]) -> float:
    r, g, b = rgb[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.book
@pytest.mark.browser
def test_figures_in_dark_mode(built_book: Build, site: str) -> None:
    chromium_or_skip()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": WIDTH, "height": 900})
        context.route("**/*", local_only)
        # the theme's own switch stores the reader's choice here
        context.add_init_script("localStorage.setItem('mode', 'dark');"
                                "localStorage.setItem('theme', 'dark');")
        page = context.new_page()
        page.goto(f"{site}/chapters/01-precision.html", wait_until="networkidle")
        page.evaluate(SETTLE)
        seen = page.evaluate(FIRST_FIGURE)
        box = seen["box"]
        shot = page.screenshot(clip=box)
        if os.environ.get("BOOK_SCREENSHOTS"):
            page.screenshot(path=str(Path(os.environ["BOOK_SCREENSHOTS"]) / "dark-mode.png"))
        browser.close()
    assert seen["theme"] == "dark", f"the page did not switch to dark mode: {seen}"
    page_rgb = tuple(float(v) for v in re.findall(r"[\d.]+", seen["background"])[:3])
    assert luminance(page_rgb) < 80, f"the dark page background is not dark: {seen}"
    grey = Image.open(io.BytesIO(shot)).convert("L").histogram()
    light = sum(grey[161:]) / sum(grey)
    # a figure drawn for a white page, shown transparent, would be mostly dark here
    assert light > 0.6, (f"in dark mode only {light:.0%} of the first figure of Chapter 1 is "
                         f"light: the figure is drawn on the dark page")


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


# What the PDF edition needs from the system (make pdf-deps installs Debian's packages).
TEX_TOOLS = ("xelatex", "latexmk", "pdftotext", "pdfimages", "pdfinfo")


def chapter_titles() -> dict[str, str]:
    """Each chapter of ``_toc.yml`` with the title its notebook opens with."""
    titles = {}
    for name in toc_files():
        if name.startswith("chapters/"):
            cells = json.loads((ROOT / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
            first = "".join(cells[0]["source"]).splitlines()[0]
            titles[name] = first.removeprefix("# ").strip()
    return titles


@pytest.fixture(scope="session")
def built_pdf(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Build the PDF edition once, as ``make pdf`` does, into a temporary directory."""
    missing = [tool for tool in TEX_TOOLS if shutil.which(tool) is None]
    if missing:
        problem = f"{', '.join(missing)} not installed (make pdf-deps installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the PDF edition cannot be built on CI: {problem}")
        pytest.skip(f"PDF edition not built: {problem}")
    out = tmp_path_factory.mktemp("pdf")
    return Build(*jupyter_book_build(out, "--builder", "pdflatex", timeout=1800),
                 out / "_build" / "latex")


def letters(text: str) -> str:
    """`text` without any whitespace: pdftotext drops or adds spaces around dashes and breaks."""
    return "".join(text.split())


@pytest.mark.book
def test_pdf_edition(built_pdf: Build) -> None:
    assert built_pdf.returncode == 0, f"the PDF build failed:\n{build_report(built_pdf)}"
    assert "WARNING" not in built_pdf.log, f"the PDF build warned:\n{build_report(built_pdf)}"
    pdf = built_pdf.html / "levers.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    pages = int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.MULTILINE).group(1))
    text = letters(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                check=True).stdout)
    missing = [title for title in chapter_titles().values() if letters(title) not in text]
    assert not missing, f"chapter titles not in the PDF's text: {missing}"
    assert "精度与稀疏性" in text, "the Chinese title is not typeset"
    listed = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True,
                            check=True).stdout.splitlines()[2:]
    images = [row for row in listed if row.split()[2] == "image"]
    figures = sum(
        "image/png" in output.get("data", {})
        for name in chapter_titles()
        for cell in json.loads((ROOT / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
        for output in cell.get("outputs", [])
    )
    assert len(images) >= figures, f"{len(images)} images in the PDF, {figures} in the chapters"
    print(f"PDF built in {built_pdf.seconds:.0f} s: {pages} pages, {len(images)} images")
