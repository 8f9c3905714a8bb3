# syntax=docker/dockerfile:1
# Two images from one file (make image builds both, with docker or buildah):
#   serving   the prediction service: gunicorn + Flask over the model in /models (read-only).
#             The default target, so a plain `docker build .` builds it:
#               docker build -t linreg-serving:dev .
#               docker run -p 8000:8000 -v "$PWD/artifacts:/models:ro" linreg-serving:dev
#   training  Prefect worker + both flows + Dask, for a process worker, a Kubernetes work
#             pool's jobs and the Dask workers of a cluster:
#               docker build --target training -t linreg-training:dev .
# BASE_IMAGE: any Debian bookworm image with Python 3.11 and its venv module (make image uses
# a debootstrapped one when no registry answers). Both stages of an image use the same base:
# the virtualenv's interpreter is the base's.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Build stages: virtualenvs with the pinned runtime and this project (binary wheels only).
# pip's settings may come in as build secrets (pip.conf, and the CA bundle it names), never
# into a layer; without them pip uses its defaults.
FROM ${BASE_IMAGE} AS build-serving
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY serving/requirements.txt serving/requirements.txt
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca \
    pip install --no-cache-dir --only-binary=:all: -r serving/requirements.txt
COPY pyproject.toml README.md ./
COPY linreg linreg
COPY tasks tasks
COPY flows flows
COPY serving serving
COPY cli cli
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca \
    pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv/lib

FROM ${BASE_IMAGE} AS build-training
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.txt requirements.txt
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca \
    pip install --no-cache-dir --only-binary=:all: -r requirements.txt \
    && python -m compileall -q /opt/venv/lib

# Training runtime: the venv, and the project's source in /app, the deployments' working
# directory (prefect.yaml's entrypoints are paths: flows/training.py:...); no compiler, no
# root. PREFECT_HOME in /tmp: the root filesystem may be read-only.
FROM ${BASE_IMAGE} AS training
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build-training /opt/venv /opt/venv
WORKDIR /app
COPY linreg linreg
COPY tasks tasks
COPY flows flows
COPY cli cli
COPY main.py prefect.yaml ./
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_HOME=/tmp/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    MALLOC_ARENA_MAX=1 \
    LINREG_PROJECT_DIR=/app
USER 10001:10001
ENTRYPOINT ["python", "main.py"]
CMD ["--help"]

# Serving runtime (the default target): the same base, the virtualenv, no compiler or build
# tools, no root.
FROM ${BASE_IMAGE} AS serving
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build-serving /opt/venv /opt/venv
COPY serving/gunicorn.conf.py /etc/linreg/gunicorn.conf.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=/models \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["gunicorn", "-c", "/etc/linreg/gunicorn.conf.py"]
CMD ["serving.wsgi:app"]
