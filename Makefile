# Set-up and everyday commands. The first call installs everything into .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= headscope-report
CHROMIUM := /usr/bin/chromium

.PHONY: install report test test-old-kernels lint format bench clean chromium

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: any other version pulls gigabytes of CUDA packages
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

report: $(STAMP)
	$(BIN)/headscope report --out $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# The report's browser tests drive the system Chromium (never a downloaded one).
chromium:
	@test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# The numeric tests once more on torch's and MKL's oldest kernels: other summation orders, as on
# another processor, so a test that assumes bit-identity between two computations fails here.
OLD_KERNELS   := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2
NUMERIC_TESTS := tests/scores tests/models tests/test_capture.py tests/test_embedding.py \
                 tests/benchmarks/test_ov_bench.py

test: $(STAMP) lint chromium
	$(BIN)/python -m pytest -q -n 2 tests
	$(OLD_KERNELS) $(BIN)/python -m pytest -q -n 2 $(NUMERIC_TESTS)

test-old-kernels: $(STAMP)
	$(OLD_KERNELS) $(BIN)/python -m pytest -q -n 2 $(NUMERIC_TESTS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(OUT)
