# make bench : set up .venv and run the default benchmark end to end (reports/results.csv, reports/leaderboard.md)
# make test  : set up .venv, lint, and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: bench test lint install clean regress regress-run baseline

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/snakemake --cores all

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

# the regression gate: a fast oracle-only grid compared with the committed reports/baseline.csv
regress: regress-run
	$(BIN)/dpmbench regress --baseline reports/baseline.csv --results reports/regression/results.csv \
		--config config/regression.yaml

baseline: regress-run
	cp reports/regression/results.csv reports/baseline.csv

regress-run: $(STAMP)
	$(BIN)/snakemake --cores all --quiet --configfile config/regression.yaml

clean:
	rm -rf results reports/results.csv reports/leaderboard.* reports/figures reports/paper_comparison.md reports/regression .snakemake
