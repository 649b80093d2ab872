# make bench : set up .venv and run the default benchmark end to end (reports/results.csv, reports/leaderboard.md)
# make test  : set up .venv, lint, and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: bench test test-slurm lint install clean regress regress-run baseline browser rehearse

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,slurm]'
	touch $(STAMP)

install: $(STAMP)

# --scheduler greedy: Snakemake's default with PuLP installed (ILP) runs the CBC solver in a subprocess in every
# scheduling round; this DAG has no resource trade-off for it to optimise
bench: $(STAMP)
	$(BIN)/snakemake --cores all --scheduler greedy

lint: $(STAMP)
	$(BIN)/ruff check .

# -n 2: the suite on two worker processes, one torch thread each (tests/conftest.py), a module per worker, modules
# longest first (pyproject.toml's --dist loadfile, tests/conftest.py's order)
test: lint browser
	$(BIN)/python -m pytest -q --durations=15 -n 2

# tests/test_site.py opens the leaderboard site in Debian's chromium: installed here where missing (apt-get, as
# root on CI); without it that test installs it itself or fails saying why
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-dejavu-core; } || \
		echo "make: chromium is missing and apt-get could not install it (tests/test_site.py will fail)"

# through a real single-node SLURM cluster (root, apt): start it, run tests/slurm (end to end vs local, the
# scheduler's faults), always stop it; measured numbers in reports/slurm-ci/measured.txt
test-slurm: $(STAMP)
	mkdir -p reports/slurm-ci; rm -f reports/slurm-ci/measured.txt
	trap 'cluster/slurm-local stop' EXIT; cluster/slurm-local start && \
	DPMBENCH_SLURM_REPORT=$(CURDIR)/reports/slurm-ci/measured.txt timeout 1800 $(BIN)/python -m pytest -q -m slurm \
		tests/slurm; rc=$$?; cat reports/slurm-ci/measured.txt 2>/dev/null; exit $$rc

# the regression gate: a fast grid (the oracle models and digits-unet) compared with the committed reports/baseline.csv,
# two-sided (a cell better beyond tolerance fails too, exit 3, until `make baseline` refreshes the baseline on purpose)
regress: regress-run
	$(BIN)/dpmbench regress --baseline reports/baseline.csv --results reports/regression/results.csv \
		--config config/regression.yaml --fail-on-improvement

baseline: regress-run
	cp reports/regression/results.csv reports/baseline.csv

regress-run: $(STAMP)
	$(BIN)/snakemake --cores all --scheduler greedy --quiet --configfile config/regression.yaml

# the paper reproductions' dress rehearsal: every config/reproductions/*.yaml through the workflow on stand-in
# checkpoints (random weights in the real file formats, pulled from a local server), two samples per cell, down to
# paper_comparison.md; fails on a config cell without a published number or a published number without a result or a
# reason (tests/rehearsal.py, docs/papers.md "Dress rehearsal"). REHEARSE_SKIP: configs not run (their numbers are listed
# as excluded, naming them); .ci/run runs them all (the overlay caps DPM-Solver-v3's EMS fits at 64 trajectories)
rehearse: $(STAMP)
	$(BIN)/python tests/rehearsal.py --work reports/rehearsal-run $(if $(REHEARSE_SKIP),--skip $(REHEARSE_SKIP))

clean:
	rm -rf results reports/results.csv reports/leaderboard.* reports/figures reports/paper_comparison.md reports/regression .snakemake \
		reports/provenance.csv reports/provenance.json reports/site reports/site_index.png reports/rehearsal-run
