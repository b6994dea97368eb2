# The gateway's container image: `gateway serve` on 0.0.0.0:8000, settings from GATEWAY_*.
#
#   docker build -t strangler-gateway .
#   docker run --rm -p 127.0.0.1:8000:8000 strangler-gateway
#
# It carries the demo pair and routes.yaml, so it serves the demo as built; a team
# builds its own image FROM this one with its apps and its route file (deploy/README.md).
# Checked in `make test` (tests/test_deploy_image.py): hadolint, and this entry point
# run as a process with this file's environment.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- build: a virtual environment with the gateway and its runtime dependencies ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# Every dependency has a binary wheel for this platform: no compiler in either stage.
# The `redis` extra is the route store's client (--store), `demo` the demo apps' Flask
# and FastAPI (a team's image brings its own apps' dependencies instead). Versions are bounded by
# pyproject.toml; pin them with a constraints file for repeatable builds. pip stays in
# the environment, for images built FROM this one (deploy/README.md).
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --only-binary=:all: --no-binary=strangler-gateway ".[redis,demo]"

# --- runtime: the environment and the route file, as a non-root user ---
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --no-log-init --uid 10001 --gid gateway --home-dir /var/lib/gateway \
       --shell /usr/sbin/nologin gateway \
    && install --directory --owner=gateway --group=gateway /var/lib/gateway
COPY --from=build /opt/gateway /opt/gateway
COPY routes.yaml /etc/gateway/routes.yaml
# The apps: the gateway imports them from GATEWAY_APP_DIR first, wherever the route
# file is mounted. Here the demo pair; an image built on this one puts its own here.
COPY legacy_flask /opt/apps/legacy_flask
COPY new_fastapi /opt/apps/new_fastapi
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_CONFIG=/etc/gateway/routes.yaml \
    GATEWAY_APP_DIR=/opt/apps \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    BOOKSTORE_DB=/var/lib/gateway/bookstore.db \
    TMPDIR=/var/lib/gateway
WORKDIR /var/lib/gateway
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['GATEWAY_PORT'] + '/-/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway", "serve"]
