# The course's commands. Each target creates .venv from requirements.txt on first use.
#   make book        build the book into _build/html (open _build/html/index.html)
#   make test        every test: library, notebooks (nbval + reproducibility), labs, grader, book, browser
#   make lab         JupyterLab on labs/ for students
#   make notebooks   re-execute chapters/ and solutions/ in place with the reproducibility settings
#   make labs        regenerate labs/ from solutions/
#   make grade       grade submissions/*.ipynb against a lab's solution (LAB=lab01-precision)
#   make bench       time every notebook, the book build and the grader's throughput under attack

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB    ?= lab01-precision
SUBMISSIONS ?= submissions
GRADES ?= grades

.PHONY: book test lab notebooks labs grade bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -n -W --keep-going
	@echo "Open _build/html/index.html"

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n 2 --dist loadfile

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
