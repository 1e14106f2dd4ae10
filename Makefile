# The README's two commands: `make demo` and `make test`. Both call `make setup` first.
.PHONY: setup test demo lint unit component cluster e2e images cluster-up cluster-down bench \
	docs docs-serve docs-reference docs-results

PY := .venv/bin/python
export PATH := $(CURDIR)/.tools/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export DS_ACCELERATOR := cpu

setup:
	bash tools/setup.sh

lint: setup
	.venv/bin/ruff check .

# Every tier, the e2e tier (a real kubelet running the project's images) included, and the docs site.
test: lint images docs
	$(PY) -m pytest tests -q

unit: setup
	$(PY) -m pytest tests -q -m unit

component: setup
	$(PY) -m pytest tests -q -m component

cluster: setup
	$(PY) -m pytest tests -q -m cluster

e2e: images
	$(PY) -m pytest tests -q -m e2e

# The Dockerfile's images for the test node, without a registry (podman's store is in the cache;
# each image is tagged by a hash of its inputs).
images: setup
	nice -n 10 bash tools/node/images.sh

# A one-node cluster (control plane, kubelet on containerd, kube-proxy, CoreDNS) to poke at.
cluster-up: images
	nohup $(PY) -m tests.fixtures.node up > .cluster-up.log 2>&1 & \
	for i in $$(seq 180); do grep -q "cluster up" .cluster-up.log && break; sleep 1; done; cat .cluster-up.log

cluster-down:
	$(PY) -m tests.fixtures.node down

demo: setup
	.venv/bin/negrl run -f examples/arithmetic.yaml --workdir runs/arithmetic

# The documentation site (docs/, mkdocs.yml) in strict mode: a broken link or snippet, a missing page fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000

# The generated reference pages (API from the spec models, chart values, the negrl command's flags);
# tests/unit/test_docs_reference.py fails while a committed page differs from what this writes.
docs-reference: setup
	$(PY) -m tools.docs.reference --write

# A finished run's report.md and plots into docs/results/<RUN>/ (make docs-results: runs/arithmetic;
# make docs-results RUN=stargraph), then `make docs`.
RUN ?= arithmetic
docs-results: setup
	$(PY) -m tools.docs.result runs/$(RUN)
