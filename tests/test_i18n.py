"""The Chinese edition stays in step with the English one (levers/i18n.py).

- every page of the English table of contents is either translated (its translation file under
  ``i18n/zh/`` covers every unit, each stamped with the hash of the current English text) or
  listed as pending in ``i18n/zh/_edition.yml``: an English cell changed after its translation,
  a cell without translation or a translation of a cell that is gone fails here;
- the generated Chinese notebooks carry the English notebooks' cells, ids, code and stored
  outputs unchanged (so nbval's proof of the English notebooks covers them), and every
  translation keeps the English unit's math, inline code, glued numbers, labels, citations and
  link targets;
- the core terms of the glossary (``i18n/zh/terms.yml``) are used consistently, with the English
  in parentheses at their first use.

tests/test_i18n_book.py builds both editions and checks them in Chromium.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import nbformat
import pytest
import yaml

from levers import i18n

ROOT = Path(__file__).resolve().parents[1]
EDITION = i18n.Edition.load(ROOT, "zh")
PAGES = EDITION.pages()
TRANSLATED = [p for p in PAGES if not i18n.page_status(EDITION, p).pending]
TERMS = yaml.safe_load((ROOT / "i18n" / "zh" / "terms.yml").read_text(encoding="utf-8"))
GLOSSARY = "book/glossary.md"
# What a translation must keep exactly: display and inline math, roles with their targets,
# labels, inline code.
KEPT = re.compile(r"\$\$.+?\$\$|\$[^$]+\$|\{[a-z:-]+\}`[^`]*`|^\([\w-]+\)=$|`[^`]+`",
                  re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(\{(?:doc|ref|numref)\}`)(?:[^`<]*<([^>`]+)>|([^`<]+))`")


@pytest.fixture(scope="module")
def zh_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Chinese book's source, written once into a temporary folder."""
    out = tmp_path_factory.mktemp("zh-src")
    i18n.build_source(EDITION, out)
    return out


def kept(text: str) -> Counter:
    """What of `text` a translation must keep: math, inline code, roles (link text aside)."""
    blocks, rest, fences = [], [], []
    for line in text.splitlines():  # code blocks kept whole, directive fences dropped
        fence = i18n.FENCE.match(line)
        if fence and fences and not fence[2].strip():
            if fences.pop() == "code":
                blocks[-1] += "\n" + line
            continue
        if fence:
            fences.append("directive" if fence[2].strip().startswith("{") else "code")
            if fences[-1] == "code":
                blocks.append(line)
            continue
        if fences and fences[-1] == "code":
            blocks[-1] += "\n" + line
        else:
            rest.append(line)
    targets = LINK.sub(lambda m: f"{m[1]}<{m[2] or m[3]}>`", "\n".join(rest))
    return Counter(KEPT.findall(targets) + blocks)


def test_every_page_is_translated_or_pending() -> None:
    pending = set(EDITION.pending)
    stems = {str(Path(p).with_suffix("")) for p in PAGES}
    assert pending <= stems, f"pending pages not in _toc.yml: {sorted(pending - stems)}"
    assert TRANSLATED, "no page is translated"
    for page in TRANSLATED:
        assert EDITION.translation_file(page).is_file(), f"{page}: no translation, not pending"


@pytest.mark.parametrize("page", TRANSLATED)
def test_translation_is_complete_and_fresh(page: str) -> None:
    status = i18n.page_status(EDITION, page)
    assert status.fresh, (
        f"{page}: stale {status.stale}, missing {status.missing}, orphaned {status.orphaned}"
        " (the English changed after its translation: `levers i18n status` lists them)")


def test_a_changed_english_cell_is_stale(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    page = "chapters/06-mathematics.ipynb"
    for name in ("_toc.yml", "_config.yml", page, "i18n/zh/_edition.yml",
                 str(EDITION.translation_file(page).relative_to(ROOT))):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    copy = i18n.Edition.load(tmp_path, "zh")
    assert i18n.page_status(copy, page).fresh
    nb = nbformat.read(tmp_path / page, as_version=4)
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    markdown[1].source += " One more sentence."
    gone = markdown[2].id
    nb.cells.remove(markdown[2])
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("A new cell.", id="newcell1"))
    nbformat.write(nb, tmp_path / page)
    status = i18n.page_status(copy, page)
    assert (status.stale, status.missing, status.orphaned) == (
        [markdown[1].id], ["newcell1"], [gone])
    assert i18n.main(["status", "--root", str(tmp_path)]) == 1  # `levers i18n status` lists it
    assert f"stale: {markdown[1].id}" in capsys.readouterr().out
    # The build falls back to the English text of the stale cell, under the notice.
    i18n.translate_page(copy, page, tmp_path / "out.ipynb")
    out = {c.id: c.source for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells}
    assert out[markdown[1].id] == markdown[1].source
    assert "尚未译成中文" in out["newcell1"]


@pytest.mark.parametrize("page", [p for p in PAGES if p.endswith(".ipynb")])
def test_generated_notebook_keeps_code_and_outputs(page: str, zh_source: Path) -> None:
    english = nbformat.read(ROOT / page, as_version=4)
    chinese = nbformat.read(zh_source / page, as_version=4)
    assert chinese.metadata == english.metadata
    assert [(c.id, c.cell_type) for c in chinese.cells] == [
        (c.id, c.cell_type) for c in english.cells]
    for en, zh in zip(english.cells, chinese.cells, strict=True):
        if en.cell_type != "markdown":
            assert zh == en, f"{page}: code cell {en.id} differs from the English one"
    entries = EDITION.translations(page)
    if page in TRANSLATED:
        for zh in chinese.cells:
            if zh.cell_type == "markdown":
                assert zh.source == i18n.CJK_BREAK.sub("", entries[zh.id]["zh"])


@pytest.mark.parametrize("page", TRANSLATED)
def test_translation_keeps_math_code_and_references(page: str) -> None:
    entries = EDITION.translations(page)
    for key, english in i18n.page_units(ROOT / page):
        zh, en = kept(entries[key]["zh"]), kept(english)
        assert zh == en, f"{page} {key}: only in Chinese {zh - en}, only in English {en - zh}"


def english_prose(page: str) -> str:
    text = "\n".join(t for _, t in i18n.page_units(ROOT / page))
    return re.sub(r"`[^`]*`|\$[^$]*\$", " ", text)


@pytest.mark.parametrize("page", TRANSLATED)
def test_core_terms_follow_the_glossary(page: str) -> None:
    english = english_prose(page)
    chinese = "\n".join(e["zh"] for e in EDITION.translations(page).values())
    prose = "\n".join(ln for ln in chinese.splitlines() if not ln.lstrip().startswith("#"))
    for term in TERMS:
        for variant in term.get("avoid", []):
            assert variant not in chinese, f"{page}: {variant!r}, the glossary says {term['zh']}"
        if not re.search(term["match"], english, re.IGNORECASE):
            continue
        assert term["zh"] in chinese, f"{page} uses {term['en']!r} but never {term['zh']}"
        if page == GLOSSARY or term["zh"] not in prose:
            continue
        first = prose[prose.index(term["zh"]):][:60]
        parens = re.match(r"\S{0,6}?\s*[(（]([^)）]*)[)）]", first[len(term["zh"]):])
        assert parens and re.search(term["match"], parens[1], re.IGNORECASE), (
            f"{page}: the first {term['zh']} needs its English in parentheses: {first!r}")


def test_terms_are_the_glossarys() -> None:
    glossary = (ROOT / GLOSSARY).read_text(encoding="utf-8")
    for term in TERMS:
        assert term["zh"] in glossary, f"{term['zh']} ({term['en']}) is not in the glossary"


def test_config_adds_the_switch_and_the_font() -> None:
    config = i18n.book_config(EDITION)["sphinx"]["config"]
    assert config["language"] == "zh_CN"
    for name in config["html_js_files"] + config["html_css_files"]:
        assert (ROOT / "book" / "_static" / name).is_file(), name
    css = (ROOT / "book" / "_static" / "i18n-zh.css").read_text(encoding="utf-8")
    assert "Noto Sans CJK SC" in css and "url(" not in css  # system font, nothing fetched
