# seqflow — every target sets up .venv first if it is missing (torch CPU wheel first, then the rest).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export RAY_TRAIN_V2_ENABLED ?= 1

.PHONY: venv pipeline test test-fast bench ui serve clean eval-data

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

pipeline: $(STAMP) eval-data   ## fetch the evaluation audio, then run the whole flow on the embedded default (ARGS="hydra overrides")
	$(VENV)/bin/seqflow pipeline $(ARGS)

# serial by default: on 2 cores, 2 pytest-xdist workers were slower (docs/benchmarks.md); TEST_WORKERS=N on N+ cores
TEST_WORKERS ?= 0
test: $(STAMP)            ## unit + integration tests (real Ray, MLflow, Prefect, DVC); TEST_WORKERS=N: N pytest-xdist workers
	$(PY) -m pytest -q -ra --durations=20 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup) tests

test-fast: $(STAMP)       ## unit tests only
	$(PY) -m pytest -q tests/unit

bench: $(STAMP)           ## benchmarks (print side-by-side ratios)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

ui: $(STAMP)              ## MLflow UI on the project's store
	$(VENV)/bin/seqflow ui

serve: $(STAMP)           ## serve the champion trigger-word model on 127.0.0.1:8080 (ARGS="--model models:/... serve.vad.enabled=true")
	$(VENV)/bin/seqflow serve $(ARGS)

eval-data: $(STAMP)       ## evaluation-only audio from Debian packages (never used for training)
	$(PY) -m seqflow.evalsets --root eval-data

clean:                    ## remove generated artefacts (keeps .venv and the DVC remote)
	rm -rf shards ray_results mlartifacts mlflow.db .prefect
