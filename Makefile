# Two commands do all the set-up on a fresh machine: `make dev` and `make test`.
.PHONY: dev zone test lint clean browser netns haproxy image node
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed


$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# zones/ and server/ws/ are partly compiled (setup.py): editing them means building again.
$(STAMP): pyproject.toml setup.py $(wildcard zones/*.py server/ws/*.py server/ws/*.c rules/*.py rules/shooter/*.py) | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

dev: $(STAMP)  ## run Outpost with embedded Postgres, Redis and NATS unless URLs are given
	$(BIN)/outpost dev

# Another zone in the world of the `make dev` running in this folder (its services, its
# data in .outpost), for trying travel: `make zone` (z2), or `make zone ZONE=z3`.
ZONE ?= z2
zone: $(STAMP)
	$(BIN)/outpost zone --dev $(ZONE)

# A system package a test needs: installed with apt-get when none of its commands is
# there and we may; otherwise the test says loudly why it is skipped.
# $(call system_package,commands,package,what happens without it)
define system_package
	@for c in $(1); do command -v $$c >/dev/null 2>&1 && exit 0; done; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q $(2) >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(2) >/dev/null 2>&1; } || \
	    echo "*** could not install $(2): $(3) ***"; \
	  else echo "*** no $(2), and no root to install it: $(3) ***"; fi
endef

# The browser test drives Debian's chromium (Playwright's own browser download does not
# work on these machines).
browser:
	$(call system_package,chromium chromium-browser,chromium,the browser test will be skipped)

# The fault suite's partition puts a zone process on a network namespace of its own: root
# and iproute2's `ip`.
netns:
	$(call system_package,ip,iproute2,the partition scenario will be skipped)

# The TLS proxy test runs Debian's haproxy in front of an api, with docs/haproxy.cfg.
haproxy:
	$(call system_package,haproxy,haproxy,the TLS proxy tests will be skipped)

# The image test (tests/test_image.py) builds the Containerfile with Debian's podman, runs
# it with runc (crun refuses these machines' hybrid cgroups), over a Debian base it makes
# with mmdebstrap.
image:
	$(call system_package,podman,podman,the image test will be skipped)
	$(call system_package,runc,runc,the image test will be skipped)
	$(call system_package,mmdebstrap,mmdebstrap,the image test will be skipped)

# bench/node_swarm.mjs, the swarm for loads one Python core cannot read, runs on Node.js
# (tests/test_node_swarm.py).
node:
	$(call system_package,node nodejs,nodejs,the Node swarm's test will be skipped)

test: $(STAMP) browser netns haproxy image node  ## lint and type-check, then the whole suite against real services it starts itself
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .outpost .pytest_cache .ruff_cache .mypy_cache *.egg-info
