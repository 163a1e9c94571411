# seqflow training image: a Ray node (head or worker) with CUDA PyTorch, also the Prefect worker
# that runs the pipeline flow as a Ray driver. Build from the repository root:
#   docker build -f docker/train.Dockerfile -t seqflow-train:0.1.0 .
# torch comes from PyTorch's CUDA 13.0 wheel index (the same CUDA as torch 2.13.0 on PyPI); the
# CUDA runtime, cuDNN and NCCL arrive as pip wheels, so the base needs no CUDA toolkit: the host
# needs an NVIDIA driver that supports CUDA 13.0 (>= 580) and the NVIDIA Container Toolkit.
# Runs on CPU as well (trainer=cpu). Everything else follows pyproject.toml's pins.
FROM python:3.11.16-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu130
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}
ARG RAY_VERSION=2.60.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    RAY_TRAIN_V2_ENABLED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME=/home/seqflow/.prefect \
    SEQFLOW_WORKDIR=/srv/seqflow

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# git: DVC versions data/ inside a git work tree. festival + voices: the held-out evaluation engine
# (seqflow.evalsets.festival uses an installed festival before fetching Debian packages itself).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        git festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 1000 seqflow \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash seqflow \
    && mkdir -p /srv/seqflow \
    && chown seqflow:seqflow /srv/seqflow

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import sys, torch; v = torch.version.cuda; assert v and 'cu' + v.replace('.', '') == sys.argv[1], v" "${TORCH_CUDA}"

WORKDIR /opt/seqflow
COPY pyproject.toml README.md ./
COPY src ./src
COPY flows ./flows
RUN pip install . "ray[default]==${RAY_VERSION}" \
    && python -c "import ray, torch, seqflow; assert ray.__version__ == '${RAY_VERSION}', ray.__version__"

USER 1000:1000
WORKDIR /srv/seqflow
# 6379 GCS, 8265 dashboard; Ray picks the other node-to-node ports itself.
EXPOSE 6379 8265

# Healthy while this container's node belongs to a live cluster (the address is found from the local node).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["ray", "health-check"]

CMD ["ray", "start", "--head", "--port=6379", "--dashboard-host=0.0.0.0", "--disable-usage-stats", "--block"]
