# The README's two commands: `make demo` and `make test`. Both call `make setup` first.
.PHONY: setup test demo lint unit component cluster bench

PY := .venv/bin/python
export PATH := $(CURDIR)/.tools/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export DS_ACCELERATOR := cpu

setup:
	bash tools/setup.sh

lint: setup
	.venv/bin/ruff check .

test: lint
	$(PY) -m pytest tests -q

unit: setup
	$(PY) -m pytest tests -q -m unit

component: setup
	$(PY) -m pytest tests -q -m component

cluster: setup
	$(PY) -m pytest tests -q -m cluster

demo: setup
	.venv/bin/negrl run -f examples/stargraph.yaml --workdir runs/stargraph
