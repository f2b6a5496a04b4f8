# Two commands for a newcomer: `make example` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel; on a machine with a GPU, set TORCH to the build you want.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup example test serve clean screenshots

$(BIN)/reportgen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,ray,onnx]"  # ray: the Ray executor's tests; onnx: the ONNX tests
	$(BIN)/python -m pip install -q --no-deps "onnx2torch>=1.5,<2"  # the ONNX converter, as `reportgen install-onnx` does
	touch $@

setup: $(BIN)/reportgen

example: setup
	$(BIN)/reportgen build specs/towncenter.yaml
	$(BIN)/reportgen build specs/edges.yaml
	$(BIN)/reportgen build specs/colour_mlp.yaml
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "Open site/index.html, or run: $(BIN)/mkdocs serve"

# On every core (pytest-xdist; logical: each hyperthread is a core, as the builds count them).
# worksteal hands each worker a contiguous half of the suite, the tests of the example reports
# first (tests/conftest.py), so each example is built once. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= logical
test: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

# Screenshots of every kind of page at 1400 and 390 px, into screenshots/ (needs
# playwright and /usr/bin/chromium; see .ci/run). The example builds keep their cache in
# .reportgen-cache, so a second run takes a fraction of the first.
screenshots: setup
	REPORTGEN_REQUIRE_BROWSER=1 REPORTGEN_SITE_CACHE=.reportgen-cache $(BIN)/python -m pytest tests/publish/test_site.py -k "page_kind" -q
	@echo "Open the PNGs in screenshots/"

serve: example
	$(BIN)/mkdocs serve

clean:
	rm -rf site docs/towncenter docs/edges docs/colour-mlp docs/.*.lock
