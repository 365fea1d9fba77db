# Set-up and entry points. `make demo` and `make test` install into .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser test test-slow demo lint clean bench-peers

install: $(STAMP) browser

# Debian's chromium (+ a CJK font) for the browser tests, installed with apt-get when missing; the
# browser tests skip, saying why, where it cannot be installed.
browser:
	@if command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi wqy; then :; \
	elif ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
		echo "make: chromium + fonts-wqy-zenhei are missing and cannot be installed here (need apt-get as root): browser tests will be skipped"; \
	else \
		echo "make: installing Debian packages chromium and fonts-wqy-zenhei for the browser tests (apt-get)"; \
		apt-get install -y -q chromium fonts-wqy-zenhei >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium fonts-wqy-zenhei >/dev/null 2>&1; } || \
		echo "make: chromium could not be installed: browser tests will be skipped"; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU machines get the CPU torch wheel (a GPU machine keeps or installs its CUDA build).
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e '.[dev,webui]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	$(PY) scripts/demo.py

# alignlab against LLaMA-Factory 0.9.5 (and TRL 1.16 for GRPO) on the same YAML, then serving against
# `llamafactory-cli api` (peer venvs under ~/.cache/alignlab-peers, built on first use), 3 alternated pairs per
# workload; appends the tables to bench/RESULTS.md. Not part of `make test`.
bench-peers: install
	$(PY) bench/peers.py --pairs 3 --append
	$(PY) bench/serve_peers.py --pairs 3 --append

lint: install
	$(VENV)/bin/ruff check src tests scripts bench

clean:
	rm -rf $(VENV) saves .pytest_cache
