"""The Chinese edition: translation files, their staleness, and the generated second book.

The English notebooks stay the one executed source. ``i18n/<lang>/<page>.yml`` maps each unit
of an English page (a notebook's markdown cell, by cell id; a block of a ``.md`` page, by its
section's slug and place, ``who-it-is-for.2``) to ``{hash: <hash of the English text>, zh: ...}``.
`build_source` writes a complete second book: every page of the English table of contents, with
translated units in place of the English ones and code cells and stored outputs copied unchanged
(never re-executed). Pages listed as ``pending`` in ``i18n/<lang>/_edition.yml``, and units whose
translation is stale or missing, keep their English text under a notice, so that every
cross-reference and cross-document glue path of the English book resolves in the second book.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

from levers._checks import fail

#: Characters of the SHA-256 hex digest kept as a unit's hash.
HASH_CHARS = 12
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})(.*)$")
LABEL = re.compile(r"^\([^)]+\)=\s*$")  # a MyST target, `(forbidden)=`
# A line break between two CJK characters would show as a space: the output joins the lines.
CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
CJK_BREAK = re.compile(f"(?<=[{CJK}])\n[ \t]*(?=[{CJK}])")


def source_hash(text: str) -> str:
    """The hash of an English unit, insensitive to trailing whitespace.

    Examples
    --------
    >>> source_hash("Some text.  \\n") == source_hash("Some text.")
    True
    >>> len(source_hash("x"))
    12
    """
    if not isinstance(text, str):
        raise fail("text", text, "a str")
    norm = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return hashlib.sha256(norm.encode()).hexdigest()[:HASH_CHARS]


def markdown_blocks(text: str) -> list[tuple[str, str]]:
    """Cut a MyST page into ``(key, block)`` pairs at blank lines that are outside fences.

    Examples
    --------
    >>> page = "# Title\\n\\nOne.\\n\\n```{note}\\nA\\n\\nB\\n```\\n\\n## Next step\\n\\nTwo."
    >>> [key for key, _ in markdown_blocks(page)]
    ['title.0', 'title.1', 'title.2', 'next-step.0', 'next-step.1']
    >>> [key for key, _ in markdown_blocks("(lbl)=\\n## A\\n\\n```bash\\n# not a heading\\n```")]
    ['a.0', 'a.1']
    >>> markdown_blocks(page)[2][1]
    '```{note}\\nA\\n\\nB\\n```'
    """
    if not isinstance(text, str):
        raise fail("text", text, "a str")
    blocks, fences = [[]], []  # lines of each block; the fences open at this line
    for line in text.splitlines():
        match = FENCE.match(line)
        if match and fences and not match[2].strip() and match[1].startswith(fences[-1]):
            fences.pop()
        elif match and (match[2].strip() or not fences):
            fences.append(match[1])
        if not line.strip() and not fences:
            blocks.append([])
        else:
            blocks[-1].append(line)
    pairs, seen, section, place = [], {}, "top", 0
    for lines in filter(None, blocks):
        # A block opens a section when its first line (after MyST labels) is a heading: a
        # comment inside a code block (`# Debian`, `### BEGIN ...`) is not one.
        first = next((ln for ln in lines if not LABEL.match(ln)), "")
        heading = first if re.match(r"#{1,6}\s", first) else None
        if heading is not None:
            slug = "-".join(re.findall(r"[a-z0-9]+", heading.lower())) or "section"
            seen[slug] = seen.get(slug, 0) + 1
            section = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
            place = 0
        pairs.append((f"{section}.{place}", "\n".join(lines)))
        place += 1
    return pairs


def page_units(path: Path) -> list[tuple[str, str]]:
    """The ``(key, English text)`` units of a page: markdown cells of a notebook, by cell id,
    or the blocks of a ``.md`` page (`markdown_blocks`)."""
    path = Path(path)
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return [(c.id, c.source) for c in nb.cells if c.cell_type == "markdown"]
    if path.suffix == ".md":
        return markdown_blocks(path.read_text(encoding="utf-8"))
    raise fail("path", str(path), "a .ipynb or .md page")


@dataclass
class Edition:
    """One language's settings, read from ``i18n/<lang>/_edition.yml``."""

    root: Path
    lang: str
    settings: dict = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path | str = ".", lang: str = "zh") -> Edition:
        """Read the edition of `lang` under the repository `root`."""
        if not re.fullmatch(r"[a-z]{2}(_[A-Z]{2})?", str(lang)):
            raise fail("lang", lang, "a language code like 'zh'")
        path = (root := Path(root)) / "i18n" / lang / "_edition.yml"
        if not path.is_file():
            raise fail("lang", lang, f"a language with {path}, which does not exist")
        return cls(root, lang, yaml.safe_load(path.read_text(encoding="utf-8")))

    @property
    def pending(self) -> list[str]:
        """Pages (toc paths) shown in English under a notice until they are translated."""
        return list(self.settings.get("pending") or [])

    def pages(self) -> list[str]:
        """Every page of the English table of contents, as a path with its suffix."""
        toc = (self.root / "_toc.yml").read_text(encoding="utf-8")
        names = re.findall(r"^[\s-]*(?:file|root):\s*(\S+)", toc, re.MULTILINE)
        return [str(p.relative_to(self.root)) for name in names
                for p in sorted(self.root.glob(name + ".*")) if p.suffix in (".md", ".ipynb")]

    def translation_file(self, page: str) -> Path:
        """Where the translation of `page` (``chapters/06-mathematics.ipynb``) lives."""
        return self.root / "i18n" / self.lang / Path(page).with_suffix(".yml")

    def translations(self, page: str) -> dict[str, dict]:
        """The translation entries of `page` (empty if it has no translation file)."""
        path = self.translation_file(page)
        if not path.is_file():
            return {}
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"{path} must map unit keys to entries, got {type(entries)}")
        return entries


def write_translation(edition: Edition, page: str, zh: dict[str, str]) -> Path:
    """Record `zh` (unit key -> translation) for `page`, stamped with the hashes of the current
    English units, keeping the page's other entries; return the translation file."""
    if not isinstance(zh, dict) or not all(isinstance(v, str) for v in zh.values()):
        raise fail("zh", zh, "a dict mapping unit keys to str translations")
    units = dict(page_units(edition.root / page))
    if unknown := sorted(set(zh) - set(units)):
        raise fail("zh", unknown, f"keyed by units of {page}; unknown keys")
    entries = edition.translations(page)
    for key, text in zh.items():
        lines = [line.rstrip() for line in text.strip().splitlines()]
        entries[key] = {"hash": source_hash(units[key]), "zh": "\n".join(lines)}
    order = [key for key in units if key in entries] + [k for k in entries if k not in units]
    dumper = type("Dumper", (yaml.SafeDumper,), {})  # multi-line text as a literal block
    dumper.add_representer(str, lambda dump, text: dump.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))
    path = edition.translation_file(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump({k: entries[k] for k in order}, Dumper=dumper, sort_keys=False,
                              allow_unicode=True, width=1000), encoding="utf-8")
    return path


@dataclass
class PageStatus:
    """How a page's translation stands against the current English text."""

    page: str
    pending: bool
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> bool:
        """True when every unit is translated from the current English and nothing is left."""
        return not (self.missing or self.stale or self.orphaned)


def page_status(edition: Edition, page: str) -> PageStatus:
    """Compare `page`'s translation entries with its English units."""
    units, entries = dict(page_units(edition.root / page)), edition.translations(page)
    status = PageStatus(page, str(Path(page).with_suffix("")) in edition.pending)
    for key, text in units.items():
        if not isinstance(entry := entries.get(key), dict) or not isinstance(entry.get("zh"), str):
            status.missing.append(key)
        elif entry.get("hash") != source_hash(text):
            status.stale.append(key)
    status.orphaned = [key for key in entries if key not in units]
    return status


def _with_notice(text: str, notice: str) -> str:
    lines = text.splitlines()
    at = next((i + 1 for i, ln in enumerate(lines) if re.match(r"#\s", ln)), 0)
    note = ["", ":::{note}", notice.strip(), ":::", ""]
    return "\n".join(lines[:at] + note + lines[at:])


def translate_page(edition: Edition, page: str, out: Path) -> PageStatus:
    """Write the translated `page` to `out`: a notebook keeps every cell, id, code source and
    stored output of the English one; only markdown sources change."""
    status, entries = page_status(edition, page), edition.translations(page)
    english = status.pending or status.missing + status.stale
    units = [(key, text if status.pending or key in english else CJK_BREAK.sub(
        "", entries[key]["zh"])) for key, text in page_units(edition.root / page)]
    if english:
        units[0] = (units[0][0], _with_notice(units[0][1], edition.settings["notice"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    if page.endswith(".ipynb"):
        nb = nbformat.read(edition.root / page, as_version=4)
        text = dict(units)
        for cell in (cell for cell in nb.cells if cell.cell_type == "markdown"):
            cell.source = text[cell.id]
        content = nbformat.writes(nb) + "\n"
    else:
        content = "\n\n".join(text for _, text in units) + "\n"
    if not out.is_file() or out.read_text(encoding="utf-8") != content:
        out.write_text(content, encoding="utf-8")  # unchanged files keep Sphinx's cache
    return status


def book_config(edition: Edition) -> dict:
    """The second book's ``_config.yml``: the English one with the edition's overrides."""
    config = yaml.safe_load((edition.root / "_config.yml").read_text(encoding="utf-8"))
    book = edition.settings.get("book", {})
    config["title"] = book.get("title", config["title"])
    sphinx = config["sphinx"]["config"]
    sphinx["language"] = book.get("language", edition.lang)
    sphinx["html_css_files"] = sphinx.get("html_css_files", []) + book.get("css", [])
    return config


def book_toc(edition: Edition) -> dict:
    """The second book's ``_toc.yml``: the English one with its part captions translated."""
    toc = yaml.safe_load((edition.root / "_toc.yml").read_text(encoding="utf-8"))
    captions = edition.settings.get("captions", {})
    for part in (part for part in toc.get("parts", []) if "caption" in part):
        part["caption"] = captions.get(part["caption"], part["caption"])
    return toc


def build_source(edition: Edition, out: Path) -> list[PageStatus]:
    """Write the whole second book under `out` (config, toc, assets, every page)."""
    (out := Path(out)).mkdir(parents=True, exist_ok=True)
    for name, data in (("_config.yml", book_config(edition)), ("_toc.yml", book_toc(edition))):
        (out / name).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                                encoding="utf-8")
    shutil.copytree(edition.root / "book", out / "book", dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names if n.endswith(".md")])
    return [translate_page(edition, page, out / page) for page in edition.pages()]


def build_book(source: Path, html: Path) -> float:
    """Build the second book from `source` with jupyter-book (``-n -W``) and copy its HTML to
    `html`; return the seconds the build took."""
    start = time.perf_counter()
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jupyter_book), "build", str(source), "-n", "-W", "--keep-going"],
                   check=True)
    shutil.copytree(Path(source) / "_build" / "html", html, dirs_exist_ok=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """``levers i18n build|status``: write and build the second book, or list what is stale."""
    parser = argparse.ArgumentParser(prog="levers i18n", description=main.__doc__)
    parser.add_argument("action", choices=["build", "status"])
    for flag, default in (("--lang", "zh"), ("--root", "."), ("--source", "_build/<lang>-src"),
                          ("--html", "_build/html/<lang>")):
        parser.add_argument(flag, default=default, help=f"default: {default}")
    parser.add_argument("--no-book", dest="book", action="store_false",
                        help="write the second book's source only")
    args = parser.parse_args(argv)
    edition = Edition.load(args.root, args.lang)
    if args.action == "status":
        statuses = [page_status(edition, page) for page in edition.pages()]
    else:
        source = edition.root / args.source.replace("<lang>", args.lang)
        statuses = build_source(edition, source)
        print(f"wrote {source}")
    bad = 0
    for st in statuses:
        bad += not (st.pending or st.fresh)
        state = "pending" if st.pending else "fresh" if st.fresh else "STALE"
        print(f"{state:9s} {st.page}" + "".join(
            f"\n  {kind}: {' '.join(keys)}" for kind, keys in
            (("stale", st.stale), ("missing", st.missing), ("orphaned", st.orphaned))
            if keys and not st.pending))
    if args.action == "build" and args.book:
        html = edition.root / args.html.replace("<lang>", args.lang)
        print(f"built {html} in {build_book(source, html):.1f} s")
    return 1 if bad and args.action == "status" else 0
