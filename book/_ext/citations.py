"""Author-year citations in round brackets: "Hoefler et al. (2021)", "(LeCun et al., 1990)".

sphinxcontrib-bibtex's ``author_year`` style uses square brackets; this registers the same style
with round ones as ``author_year_round`` (select it with ``bibtex_reference_style``).
"""

from __future__ import annotations

import dataclasses

import sphinxcontrib.bibtex.plugin
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle


def round_brackets() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclasses.dataclass
class RoundAuthorYear(AuthorYearReferenceStyle):
    bracket_parenthetical: BracketStyle = dataclasses.field(default_factory=round_brackets)
    bracket_textual: BracketStyle = dataclasses.field(default_factory=round_brackets)
    bracket_author: BracketStyle = dataclasses.field(default_factory=round_brackets)
    bracket_label: BracketStyle = dataclasses.field(default_factory=round_brackets)
    bracket_year: BracketStyle = dataclasses.field(default_factory=round_brackets)


def setup(app: Sphinx) -> dict:
    sphinxcontrib.bibtex.plugin.register_plugin(
        "sphinxcontrib.bibtex.style.referencing", "author_year_round", RoundAuthorYear
    )
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
