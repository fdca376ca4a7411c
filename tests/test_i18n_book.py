"""Both editions build cleanly; in Chromium the Chinese pages work and the language switch works.

Builds the English book and the Chinese one (each ``-n -W``, no warning) into a temporary folder
laid out as ``make book`` lays out ``_build/html`` (the Chinese edition under ``zh/``), serves it
from 127.0.0.1, and checks every Chinese page the way tests/test_book.py checks the English
ones (no console error, no failed or remote request, math typeset, images loaded); on the
translated pages, that the text is set in a CJK font and no Markdown emphasis is left
unrendered; and on every translated page in both editions, that the switch leads to the same
page in the other edition. Last, that the grader scores a submission whose markdown is Chinese
(as in a generated Chinese lab) exactly as the English one.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_book import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LOCAL_HOST,
    chromium_or_skip,
    html_pages,
    local_only,
    visit,
)

from levers import i18n

ROOT = Path(__file__).resolve().parents[1]
EDITION = i18n.Edition.load(ROOT, "zh")
TRANSLATED = [p for p in EDITION.pages() if not i18n.page_status(EDITION, p).pending]

OPEN_EMPHASIS = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]\s?\*|\*\s?"
                           r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
PAGE_TEXT = """() => {
    const main = document.querySelector("main") || document.body;
    const font = getComputedStyle(document.querySelector("main p") || main).fontFamily;
    const link = document.querySelector("a.i18n-switch");
    // the text a reader reads: no code, output, math or (English) API docstrings
    const prose = main.cloneNode(true);
    prose.querySelectorAll("pre, code, .cell_output, mjx-container, script, style, dl.py")
         .forEach((el) => el.remove());
    return {lang: document.documentElement.lang, font: font, text: prose.textContent,
            cjk: document.fonts.check('16px "Noto Sans CJK SC"', "精度"),
            switch: link ? link.href : null};
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Both editions built into one folder and served from 127.0.0.1."""
    out = tmp_path_factory.mktemp("books")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    for cmd in ([str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "-n", "-W",
                 "--keep-going"],
                [sys.executable, "-m", "levers.cli", "i18n", "build", "--source",
                 str(out / "zh-src"), "--html", str(out / "_build" / "html" / "zh")]):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "WARNING" not in log, log[-3000:]
    html = out / "_build" / "html"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        (LOCAL_HOST, 0), functools.partial(Quiet, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOCAL_HOST}:{server.server_address[1]}", html
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.book
def test_translated_pages_are_chinese(site: tuple[str, Path]) -> None:
    _, html = site
    for page in TRANSLATED:
        text = (html / "zh" / Path(page).with_suffix(".html")).read_text(encoding="utf-8")
        assert 'lang="zh-CN"' in text and "尚未译成中文" not in text, page
    for page in EDITION.pending:
        text = (html / "zh" / f"{page}.html").read_text(encoding="utf-8")
        assert "尚未译成中文" in text, f"{page} is pending but has no notice"


@pytest.mark.book
@pytest.mark.browser
def test_chinese_pages_and_the_switch_in_chromium(site: tuple[str, Path]) -> None:
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    base, html = site
    shots = Path(os.environ["BOOK_SCREENSHOTS"]) if os.environ.get("BOOK_SCREENSHOTS") else None
    zh_pages = [p.relative_to(html).as_posix() for p in html_pages(html / "zh")]
    translated = [str(Path(p).with_suffix(".html")) for p in TRANSLATED]
    problems: dict[str, list[str]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", local_only)
        for name in zh_pages:
            shot = shots / ("zh_" + name.replace("/", "_") + ".png") if shots else None
            found = visit(context, f"{base}/{name}", shot).found
            if found:
                problems[name] = found
        page = context.new_page()
        for name in translated:
            for here, there, lang in ((f"zh/{name}", name, "en"), (name, f"zh/{name}", "zh-CN")):
                page.goto(f"{base}/{here}", wait_until="networkidle")
                seen = page.evaluate(PAGE_TEXT)
                found = problems.setdefault(here, [])
                if seen["switch"] != f"{base}/{there}":
                    found.append(f"switch leads to {seen['switch']}, not {there}")
                    continue
                if here.startswith("zh/"):
                    if "Noto Sans CJK SC" not in seen["font"] or not seen["cjk"]:
                        found.append(f"text not set in a CJK font: {seen['font']}")
                    # CommonMark leaves emphasis open next to CJK punctuation: a literal *
                    # beside Chinese text (not the α* of an English docstring) is one
                    if open_star := OPEN_EMPHASIS.search(seen["text"]):
                        at = open_star.start()
                        found.append(f"unrendered emphasis: {seen['text'][at - 20:at + 20]!r}")
                page.click("a.i18n-switch")
                page.wait_for_load_state("networkidle")
                if page.evaluate("document.documentElement.lang") != lang:
                    found.append(f"the switch did not lead to the {lang} edition")
        browser.close()
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, "pages with problems:\n" + "\n".join(
        f"{name}:\n  " + "\n  ".join(found) for name, found in problems.items())


@pytest.mark.parametrize("name", ["right_answers", "half_right"])
def test_the_grader_grades_a_chinese_submission_like_the_english_one(tmp_path: Path,
                                                                     name: str) -> None:
    """A lab's Chinese version differs only in its markdown cells: same score, same tests."""
    import nbformat
    from test_grade_support import MINILAB, SUBMISSIONS, by_question, grade, results

    english = SUBMISSIONS / "honest" / f"{name}.ipynb"
    nb = nbformat.read(english, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = "（中文版）本题要求你实现下面的函数。\n\n" + cell.source
    chinese = tmp_path / f"{name}-zh.ipynb"
    nbformat.write(nb, chinese)
    status, out = grade(tmp_path, MINILAB, english, chinese)
    assert status == 0
    en, zh = results(out, name), results(out, f"{name}-zh")
    assert by_question(zh) == by_question(en) and zh["score"] == en["score"]
    assert [t["status"] for t in zh["tests"]] == [t["status"] for t in en["tests"]]
