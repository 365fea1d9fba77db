# Set-up and entry points. `make demo` and `make test` install into .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser test test-slow demo lint clean

install: $(STAMP)

# Headless Chromium (Debian's package) for the HTML report test; skipped where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 && fc-list | grep -qi wqy || ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get install -y -q chromium fonts-wqy-zenhei >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium fonts-wqy-zenhei >/dev/null 2>&1; }; } || \
		echo "chromium could not be installed: the browser test will be skipped"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU machines get the CPU torch wheel (a GPU machine keeps or installs its CUDA build).
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e '.[dev,webui]'
	touch $(STAMP)

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	$(PY) scripts/demo.py

lint: install
	$(VENV)/bin/ruff check src tests scripts bench

clean:
	rm -rf $(VENV) saves .pytest_cache
