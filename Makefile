# The README's two commands: `make demo` and `make test`. Both call `make setup` first.
.PHONY: setup test demo lint unit component cluster e2e images cluster-up cluster-down bench

PY := .venv/bin/python
export PATH := $(CURDIR)/.tools/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export DS_ACCELERATOR := cpu

setup:
	bash tools/setup.sh

lint: setup
	.venv/bin/ruff check .

# The e2e tier (a real kubelet running the project's images) is `make e2e`: its images take about
# 25 minutes to build cold on 2 cores, which a cold `make test` cannot afford within an hour.
test: lint
	$(PY) -m pytest tests -q -m "not e2e"

unit: setup
	$(PY) -m pytest tests -q -m unit

component: setup
	$(PY) -m pytest tests -q -m component

cluster: setup
	$(PY) -m pytest tests -q -m cluster

e2e: images
	$(PY) -m pytest tests -q -m e2e

# The Dockerfile's images for the test node, without a registry (cached by a hash of their inputs).
images: setup
	nice -n 10 bash tools/node/images.sh

# A one-node cluster (control plane, kubelet on containerd, kube-proxy, CoreDNS) to poke at.
cluster-up: images
	nohup $(PY) -m tests.fixtures.node up > .cluster-up.log 2>&1 & \
	for i in $$(seq 180); do grep -q "cluster up" .cluster-up.log && break; sleep 1; done; cat .cluster-up.log

cluster-down:
	$(PY) -m tests.fixtures.node down

demo: setup
	.venv/bin/negrl run -f examples/stargraph.yaml --workdir runs/stargraph
