# Two commands do everything on a fresh machine:
#   make demo   phantom data -> train -> export ONNX -> gRPC server -> segment a study -> report
#   make test   the whole test suite (what CI runs)
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.pulmoseg-installed

.PHONY: setup demo test lint protos clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	ulimit -s 32768 2>/dev/null || true; $(PYTHON) -m service.cli demo --workdir runs/demo

test: setup
	ulimit -s 32768 2>/dev/null || true; $(PYTHON) -m pytest -q -p no:cacheprovider tests

# Style, layer contracts (import-linter, see pyproject.toml) and types; the suite runs the
# contracts and mypy too (tests/test_layers.py), so CI enforces them through `make test`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

protos: setup
	$(PYTHON) -m service.grpc_api.generate

clean:
	rm -rf runs .pytest_cache .ruff_cache
