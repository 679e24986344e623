# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Exact versions of everything the venv installs (pyproject.toml declares ranges).
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)

.PHONY: test test-fast demo lint venv fonts icons clean-venv docs docs-serve docs-tables

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# The docs extra on top (mkdocs, mkdocs-material, mkdocstrings), pinned like the rest.
DOCS_STAMP := $(VENV)/.docs-installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test,docs]'
	rm -f $(VENV)/.docs-installed-*
	touch $(DOCS_STAMP)

# Test processes side by side (pytest-xdist, a test file to a process): each runs its tests
# on one torch thread, so 2 fill a 2-core machine; TEST_WORKERS=auto starts one per CPU.
TEST_WORKERS ?= 2

# Everything: tests/unit (no training) and tests/integration (training, subprocesses, a
# PostgreSQL server, torchrun); the 15 slowest tests are listed.
test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks run.py docs
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# The unit tests alone: under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit

# Fonts for the glyph dataset: Debian packages when root, else whatever the machine has.
fonts:
	bash scripts/install_fonts.sh

# The icon dataset: Debian icon themes when root, then `sdm data icons` (about 6 minutes).
icons: $(STAMP)
	bash scripts/install_icons.sh
	$(VENV)/bin/sdm data icons

demo: $(STAMP) fonts
	$(VENV)/bin/sdm demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks run.py docs

# The documentation site (docs/, mkdocs.yml) into site/; strict: a broken link, a page missing
# from the nav or an unresolved API reference fails the build.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The site with live reload on http://127.0.0.1:8000.
docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# Regenerate every generated table (study reports from their ledgers, the paper's tables, the
# README's summary, the tuned comparison); tests/unit/test_doc_tables.py fails when one is stale.
docs-tables: $(STAMP)
	$(PY) -m sdm.doc_tables
	$(PY) benchmarks/tuned_comparison.py --markdown-only
