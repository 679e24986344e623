# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Exact versions of everything the venv installs (pyproject.toml declares ranges).
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)

.PHONY: test test-fast demo lint venv fonts icons clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# Everything: tests/unit (no training) and tests/integration (training, subprocesses, a
# PostgreSQL server, torchrun), about 10 minutes on 2 cores.
test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks run.py
	$(PY) -m pytest

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
	$(PY) -m ruff check src tests benchmarks run.py
