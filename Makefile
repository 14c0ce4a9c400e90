PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-unit test-integration bench clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<25" wheel
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: venv
	$(BIN)/lepton demo

test: venv browser
	$(BIN)/python -m pytest -q

# The dashboard test drives headless Chromium; install it where apt and root are available
# (elsewhere that one test skips).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } \
	  && echo "installed chromium for the dashboard test"; } || echo "chromium not installed: the dashboard test will skip"

test-unit: venv
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: venv
	$(BIN)/python -m pytest -q -m integration

bench: venv
	$(BIN)/lepton bench engine --nodes 20000 --edges 200000 --batch 1000 --json bench-engine.json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
