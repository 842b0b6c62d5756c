# GridWatch: `make demo` runs the all-in-one pipeline on simulated cameras; `make test` runs every check.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export GRIDWATCH_MODELS_DIR ?= $(CURDIR)/.cache/models
export GRIDWATCH_MEDIA_DIR ?= $(CURDIR)/.cache/media

.PHONY: setup models media demo test lint unit e2e bench bench-pipeline accuracy clean

setup:
	bash scripts/setup.sh

models: setup
	$(BIN)/gridwatch models prepare --models-dir $(GRIDWATCH_MODELS_DIR)

media: setup
	$(BIN)/gridwatch media prepare --media-dir $(GRIDWATCH_MEDIA_DIR)

demo: models media
	$(BIN)/gridwatch run configs/demo.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ingest detect alerts storage gridwatch
	$(BIN)/lint-imports

test: models media lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --junitxml=test-artifacts/junit.xml

bench: models media
	$(BIN)/python bench/pipeline_demo.py

# How many mostly-still cameras the detection loop sustains, against the naive loop and FFmpeg (about 16 min).
bench-pipeline: models media
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/pipeline.py --no-fire

# Precision and recall of alerts on the labelled clips (about 15 min; docs/ACCURACY.md).
accuracy: models media
	$(BIN)/python bench/accuracy.py --crops both

clean:
	rm -rf data test-artifacts .pytest_cache .mypy_cache .ruff_cache
