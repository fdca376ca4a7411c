# The course's commands. Each target creates .venv from requirements.txt on first use.
#   make book        build the book into _build/html (open _build/html/index.html)
#   make pdf         build the whole book as one PDF, _build/latex/levers.pdf (XeLaTeX)
#   make test        every test: library, notebooks (nbval + reproducibility), labs, grader, book, browser
#   make lab         JupyterLab on labs/ for students
#   make notebooks   re-execute chapters/ and solutions/ in place with the reproducibility settings
#   make labs        regenerate labs/ from solutions/
#   make grade       grade submissions/*.ipynb against a lab's solution (LAB=lab01-precision)
#   make bench       time every notebook, the book build and the grader's throughput under attack
#   make lint        ruff over the library, the tests, the chapters, the solutions and the labs
#   make test-fast   the library's tests and its docstring examples (about a minute)
#   make lock        regenerate the exact lock requirements.txt from requirements.in (pip-tools)
#
# torch policy: requirements.txt pins torch==2.13.0, which its CPU build (2.13.0+cpu) satisfies.
# Give TORCH_INDEX=https://download.pytorch.org/whl/cpu to take the CPU build from PyTorch's own
# index (no multi-gigabyte CUDA download); without it pip uses only the indexes it is configured
# with (PyPI, or a local mirror), so a machine that reaches PyPI alone still installs.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB    ?= lab01-precision
SUBMISSIONS ?= submissions
GRADES ?= grades
TORCH_INDEX ?=
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check \
          $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# The library's own tests: everything but the notebooks, labs, grader, book and CLI runs, and
# test_repro, whose fresh-process runs take minutes (make test runs them all).
LIB_TESTS := $(filter-out tests/test_book.py tests/test_labs.py tests/test_reproducibility.py \
               tests/test_cli.py tests/test_style.py tests/test_repro.py tests/test_grade_%.py \
               tests/test_i18n_book.py, \
               $(wildcard tests/test_*.py))

.PHONY: book pdf pdf-deps test test-fast lint lock lab notebooks labs grade bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -n -W --keep-going
	$(BIN)/levers i18n build
	@echo "Open _build/html/index.html (中文版: _build/html/zh/index.html)"

# The PDF edition: Sphinx's LaTeX writer and XeLaTeX (xeCJK and Noto CJK for the Chinese
# title and glossary). Debian's TeX packages are installed when missing, as .ci/run installs
# Chromium (as root; elsewhere prefix sudo or install TEX_DEBS yourself). The PDF is copied
# next to the HTML edition, where the intro page links to it.
TEX_DEBS := texlive-xetex texlive-latex-recommended texlive-latex-extra \
            texlive-fonts-recommended tex-gyre texlive-lang-chinese latexmk \
            fonts-dejavu-core fonts-noto-cjk poppler-utils
TEX_READY := command -v xelatex && command -v latexmk && command -v pdftotext \
             && kpsewhich xeCJK.sty && fc-list | grep -q "Noto Serif CJK" \
             && fc-list | grep -q "DejaVu Serif"

pdf-deps:
	@if ! ( $(TEX_READY) ) >/dev/null 2>&1; then \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(TEX_DEBS) >/dev/null; \
	fi

pdf: $(STAMP) pdf-deps
	$(BIN)/jupyter-book build . --builder pdflatex -n -W --keep-going
	mkdir -p _build/html && cp _build/latex/levers.pdf _build/html/levers.pdf
	@echo "Open _build/latex/levers.pdf"

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile levers $(LIB_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check levers tests chapters solutions labs conftest.py benchmarks

# Keeps every pin it can (UPGRADE=1 moves to the newest versions). The +cpu build label is
# dropped from torch's pin so that the lock installs from PyPI too (see the torch policy above).
lock: $(STAMP)
	$(PIP) "pip-tools==7.6.2"
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
	  $(if $(UPGRADE),--upgrade) --output-file requirements.txt requirements.in
	sed -i 's/^torch==\(.*\)+cpu\b/torch==\1/' requirements.txt

lab: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/jupyter lab labs/

notebooks: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/levers notebooks run chapters solutions
	$(BIN)/levers labs build

labs: $(STAMP)
	$(BIN)/levers labs build

grade: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/levers grade solutions/$(LAB).ipynb $(SUBMISSIONS) --out $(GRADES) --jobs 2

bench: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/levers bench chapters solutions
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/bench_grade.py

clean:
	rm -rf _build .pytest_cache
