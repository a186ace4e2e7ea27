# syntax=docker/dockerfile:1
# The relay's image: one image for every `relay` command (gateway, worker NAME…, up, check-config).
#   docker buildx build --platform linux/arm64,linux/amd64 -t REGISTRY/relay:0.1.0 --push .
# Nothing here depends on the build platform, so the same file builds for both architectures.
# The build worker's variant (buildah, buildctl) is Dockerfile.builder.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- stage 1: build the relay's wheel and install it with its dependencies into a venv ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY workers ./workers
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/relay \
 && /opt/relay/bin/pip install /dist/*.whl \
 && /opt/relay/bin/pip uninstall --yes pip \
 && /opt/relay/bin/relay --help > /dev/null

# ---- stage 2: the runtime: the venv, git for the commit worker, a non-root user, no build tools --
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="relay" \
      org.opencontainers.image.description="Git webhook relay and deploy event bus for small GitOps clusters" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /home/relay --create-home \
        --shell /usr/sbin/nologin relay
COPY --from=build /opt/relay /opt/relay
ENV PATH=/opt/relay/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/relay
EXPOSE 8099
# The gateway answers /healthz on http.port, a worker on http.metrics_port (set it, e.g.
# RELAY_HTTP__METRICS_PORT=8099, or a worker has no listener); both default to 8099 here.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; e = os.environ; u.urlopen('http://127.0.0.1:%s/healthz' % e.get('RELAY_HTTP__METRICS_PORT', e.get('RELAY_HTTP__PORT', '8099')), timeout=4)"]
ENTRYPOINT ["relay"]
CMD ["--help"]
