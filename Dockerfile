# syntax=docker/dockerfile:1
# The prediction service: gunicorn + Flask serving the model in /models (a read-only volume).
#   docker build -t linreg-serving:0.1.0 .
#   docker run -p 8000:8000 -v "$PWD/artifacts:/models:ro" linreg-serving:0.1.0

# Build stage: a virtualenv with the pinned runtime and this project installed (wheels only).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY serving/requirements.txt serving/requirements.txt
RUN pip install --no-cache-dir --only-binary=:all: -r serving/requirements.txt
COPY pyproject.toml README.md ./
COPY linreg linreg
COPY tasks tasks
COPY flows flows
COPY serving serving
RUN pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv/lib

# Runtime stage: the same slim base, the virtualenv, no compiler or build tools, no root.
FROM python:3.11-slim-bookworm AS serving
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
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
