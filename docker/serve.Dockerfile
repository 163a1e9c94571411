# seqflow CPU image: `seqflow serve`, and the MLflow and Prefect servers of docker/compose.yaml.
# Build from the repository root:
#   docker build -f docker/serve.Dockerfile -t seqflow-serve:0.1.0 .
# Versions follow pyproject.toml: torch first from the CPU wheel index (as the Makefile does), then
# the project with its own pins (ray 2.60.0, mlflow 3.17.2, prefect 3.8.8, fastapi 0.150.0,
# sqlalchemy<2.1). psycopg2 and boto3 are for `mlflow server` on Postgres + S3 (MinIO).
FROM python:3.11.16-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PSYCOPG2_VERSION=2.9.13
ARG BOTO3_VERSION=1.44.5

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME=/home/seqflow/.prefect \
    SEQFLOW_WORKDIR=/srv/seqflow

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid 1000 seqflow \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin seqflow \
    && mkdir -p /srv/seqflow \
    && chown seqflow:seqflow /srv/seqflow

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /opt/seqflow
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . "psycopg2-binary==${PSYCOPG2_VERSION}" "boto3==${BOTO3_VERSION}" \
    && python -c "import torch, seqflow; assert torch.version.cuda is None, torch.version.cuda"

USER 1000:1000
WORKDIR /srv/seqflow
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# The model comes from MLflow (MLFLOW_TRACKING_URI); compose passes --model models:/<name>@champion.
CMD ["seqflow", "serve", "--host", "0.0.0.0", "--port", "8000"]
