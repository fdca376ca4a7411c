"""Make the built book work with no network: local MathJax, no Thebe loader.

The files come from the pinned ``django-static-mathjax`` package (MathJax 3.2.2). After an HTML
build we copy the one bundle the pages load (``mathjax_path``), the TeX extensions it may
autoload (``\\cancel``, ``\\color``, ...), the CHTML web fonts and the accessibility tools of
its menu (explorer, speech) into ``_static/mathjax/``.
MathJax finds its extensions and fonts relative to its own URL, so nothing is fetched elsewhere.

Jupyter Book always loads ``sphinx_thebe``, which adds a loader script to every page that would
fetch Thebe from unpkg.com once clicked. The book has no Thebe button (execution needs a
Binder server), so `drop_thebe` takes those scripts out of each page.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

#: What the bundle may load on demand, relative to MathJax's ``es5`` directory: TeX packages
#: (autoload, ``\require``), the CHTML fonts, and the accessibility tools its menu offers
#: (which need the MathML input too).
NEEDED = (
    "input/tex/extensions",
    "output/chtml/fonts/woff-v2",
    "a11y",
    "sre",
    "ui",
    "input/mml.js",
    "input/mml",
)
TARGET = "mathjax"


def mathjax_source() -> Path:
    """Return the ``es5`` directory of the installed MathJax 3 distribution."""
    try:
        import mathjax
    except ImportError as exc:
        raise ExtensionError(
            "book/_ext/offline.py needs the 'django-static-mathjax' package (pinned in "
            "requirements.txt); it is not installed"
        ) from exc
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise ExtensionError(f"no MathJax 3 bundle found under {es5}")
    return es5


def check_config(app: Sphinx, config) -> None:
    """Fail early: MathJax must be installed and ``mathjax_path`` must point at our copy."""
    mathjax_source()
    path = PurePosixPath(config.mathjax_path)
    if "://" in config.mathjax_path or path.parts[:1] != (TARGET,):
        raise ExtensionError(
            f"mathjax_path must be a local path under '{TARGET}/', got {config.mathjax_path!r}"
        )


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    """Copy the bundle, extensions and fonts into ``<outdir>/_static/mathjax``."""
    if exception is not None or app.builder.format != "html":
        return
    es5 = mathjax_source()
    bundle = PurePosixPath(app.config.mathjax_path).relative_to(TARGET)
    if not (es5 / bundle).is_file():
        raise ExtensionError(f"mathjax_path names {bundle}, which MathJax 3.2.2 does not ship")
    target = Path(app.outdir) / "_static" / TARGET
    for part in (str(bundle), *NEEDED):
        source, copy = es5 / part, target / part
        if source.is_dir():
            shutil.copytree(source, copy, dirs_exist_ok=True)
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
    license_file = es5.parent / "LICENSE"
    if license_file.is_file():
        shutil.copy2(license_file, target / "LICENSE")


def drop_thebe(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Remove sphinx-thebe's loader and its configuration script from a page."""
    context["script_files"] = [
        js
        for js in context.get("script_files", [])
        if not (js.filename or "").endswith("sphinx-thebe.js")
        and "THEBE_JS_URL" not in js.attributes.get("body", "")
    ]


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", check_config)
    app.connect("html-page-context", drop_thebe)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
