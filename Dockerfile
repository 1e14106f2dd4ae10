# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t ghcr.io/negrl/negrl-operator:0.1.0 .   (kopf operator; no torch)
#   docker build --target worker   -t ghcr.io/negrl/negrl-worker:0.1.0 .     (stage Jobs: torch, DeepSpeed)
# The samplers run the upstream vLLM OpenAI server image unchanged (vllm/vllm-openai).

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
LABEL org.opencontainers.image.source="https://github.com/negrl/negrl" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.vendor="NegRL"
RUN groupadd --gid 1000 negrl && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin negrl
WORKDIR /opt/negrl
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY sampler/ sampler/
COPY trainer/ trainer/

FROM base AS operator
LABEL org.opencontainers.image.title="negrl-operator" \
      org.opencontainers.image.description="NegRL Kubernetes operator (kopf)"
RUN pip install ".[operator]"
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["negrl"]
CMD ["operator"]

FROM base AS worker
LABEL org.opencontainers.image.title="negrl-worker" \
      org.opencontainers.image.description="NegRL stage commands: prepare, sample, credit, pairs, evaluate, train"
# build-essential: DeepSpeed compiles its CPU ops (Adam, shm comm) on first use
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install ".[worker,tracking]"
USER 1000:1000
ENV HF_HOME=/tmp/hf-home TRITON_CACHE_DIR=/tmp/triton
ENTRYPOINT ["negrl"]
CMD ["--help"]
