PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-unit test-integration bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<25" wheel
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: venv
	$(BIN)/lepton demo

test: venv
	$(BIN)/python -m pytest -q

test-unit: venv
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: venv
	$(BIN)/python -m pytest -q -m integration

bench: venv
	$(BIN)/lepton bench engine --nodes 20000 --edges 200000 --batch 1000 --json bench-engine.json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
