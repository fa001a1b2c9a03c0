# Two commands do all the set-up on a fresh machine: `make dev` and `make test`.
.PHONY: dev test lint clean browser
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed


$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# zones/ and server/ws/ are partly compiled (setup.py): editing them means building again.
$(STAMP): pyproject.toml setup.py $(wildcard zones/*.py server/ws/*.py) | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

dev: $(STAMP)  ## run Outpost with embedded Postgres, Redis and NATS unless URLs are given
	$(BIN)/outpost dev

# The browser test drives Debian's chromium (Playwright's own browser download does not
# work on these machines): install it when it is missing and we may; otherwise the test
# says loudly that it is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	      echo "*** could not install chromium: the browser test will be skipped ***"; \
	    else echo "*** no chromium, and no root to install it: the browser test will be skipped ***"; fi; }

test: $(STAMP) browser  ## lint and type-check, then the whole suite against real services it starts itself
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .outpost .pytest_cache .ruff_cache .mypy_cache *.egg-info
