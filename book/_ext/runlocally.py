"""One line under each chapter's title: how to run that notebook on the reader's own machine.

Every page built from ``chapters/*.ipynb`` gets the same sentence, with its own path, so that a
new chapter has it without writing it; the HTML download button gives the file, this line the
environment to run it in (the pinned ``.venv`` of the Setup page).
"""

from __future__ import annotations

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx

#: Documents that are chapters: their names start with this.
PREFIX = "chapters/"


def run_line(docname: str) -> nodes.paragraph:
    """The paragraph: the command that runs chapter `docname`, and a link to the Setup page."""
    notebook = f"{docname}.ipynb"
    setup = addnodes.pending_xref("", nodes.inline("", "Setup"), refdomain="std",
                                  reftype="doc", reftarget="/book/setup",
                                  refexplicit=True, refwarn=True)
    return nodes.paragraph(
        "", "", nodes.emphasis("", "Run it locally: "),
        nodes.literal("", f"make .venv/.installed && .venv/bin/jupyter lab {notebook}"),
        nodes.Text(" (the course environment, see "), setup, nodes.Text(")."),
        classes=["run-locally"],
    )


def add_run_line(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    if not docname.startswith(PREFIX):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not isinstance(section[0], nodes.title):
        return
    section.insert(1, run_line(docname))


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", add_run_line)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
