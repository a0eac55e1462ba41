# syntax=docker/dockerfile:1
#
# One image for every skolsynk service. The service is picked by the command:
#   docker run skolsynk normaliser        -> python -m skolsynk_services.normaliser
#   docker run skolsynk dispatcher        -> python -m skolsynk_services.dispatcher (set SKOLSYNK_VENDOR_ID)
#   docker run skolsynk skolsynk.cli status   -> the operator command line (`skolsynk status`)
# In Kubernetes set `args: ["skolsynk_services.<service>"]` (not `command`) so the ENTRYPOINT stays.
# The default target (runtime, the last stage) is the production image: it holds no test kit. The
# `demo` target adds the fakes and the demo source (testing/skolsynk_testkit) for docker-compose's demo.
# tests/unit/test_container_image.py checks this file against .dockerignore and the services.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# builder: resolve the pinned dependencies into a venv, then add the project
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, on their own layer: it is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# Then the project itself. --no-deps: everything it needs came from the lock above,
# so a range in pyproject.toml can never pull in an unpinned version here.
# README.md is copied because pyproject.toml names it as the package readme.
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
# pip byte-compiles what it installs: the runtime root filesystem is read-only, so
# Python could not write __pycache__ later.
RUN pip install --no-deps .

# ---------------------------------------------------------------------------
# demo-builder: the same venv plus the test kit (fake vendor server, synthetic organiser, demo source)
# ---------------------------------------------------------------------------
FROM builder AS demo-builder
COPY testing ./testing
RUN pip install --no-deps ./testing

# ---------------------------------------------------------------------------
# base: slim Python, a non-root user, nothing else (the venv comes in the stages below)
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

ARG SKOLSYNK_VERSION=0.1.0
LABEL org.opencontainers.image.title="skolsynk" \
      org.opencontainers.image.description="School-roster provisioning hub: every skolsynk service, one per command" \
      org.opencontainers.image.version="${SKOLSYNK_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
ARG APP_UID=10001
ARG APP_GID=10001
RUN groupadd --system --gid ${APP_GID} skolsynk \
    && useradd --system --uid ${APP_UID} --gid ${APP_GID} --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin skolsynk

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# An empty, root-owned working directory: `python -m` puts the cwd first on sys.path,
# so it must not be a place the service (or anyone) can write modules into.
WORKDIR /app
# The vendor catalogue ships with the image (SKOLSYNK_VENDOR_CATALOGUE_DIR defaults to deploy/vendors
# relative to /app); Kubernetes may mount its own over it.
COPY deploy/vendors /app/deploy/vendors
USER ${APP_UID}:${APP_GID}

# 8080: admin HTTP API (admin service only); 8081: /livez, /readyz, /metrics (every service).
EXPOSE 8080 8081

# Python runs as PID 1, without an init. That is deliberate: the services install their
# own SIGTERM handler (flip readiness, drain, close), which PID 1 needs to get the signal.
ENTRYPOINT ["python", "-m"]
CMD ["skolsynk_services.admin"]

# ---------------------------------------------------------------------------
# demo: docker-compose's fake vendor and demo source (`--target demo`; never deployed to production)
# ---------------------------------------------------------------------------
FROM base AS demo
COPY --from=demo-builder /opt/venv /opt/venv

# ---------------------------------------------------------------------------
# runtime: the production image and the default target (the last stage): the services, no test kit
# ---------------------------------------------------------------------------
FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
