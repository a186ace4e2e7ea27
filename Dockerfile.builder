# syntax=docker/dockerfile:1
# The build worker's image: the relay plus the tools `relay worker build` drives.
#   docker buildx build --platform linux/arm64,linux/amd64 -f Dockerfile.builder \
#       -t REGISTRY/relay-builder:0.1.0 --push .
# - buildctl (from the BuildKit image, for builder.backend: buildkit against a buildkitd; the
#   choice for docker-compose and Kubernetes, where the build itself runs in rootless buildkitd);
# - buildah (builder.backend: buildah, daemonless; inside a container it needs user namespaces:
#   run with seccomp and AppArmor unconfined and /dev/fuse, or use buildkit instead);
# - git, for deploy requests whose source is a Git repository.
# COPY --from an image index picks the target platform's binary: no architecture-specific step.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BUILDKIT_IMAGE=moby/buildkit:v0.16.0

FROM ${BUILDKIT_IMAGE} AS buildkit

# ---- stage 1: the relay's wheel and venv, exactly as in Dockerfile ---------------------------
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

# ---- stage 2: runtime with the build tools (but no compilers) --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="relay-builder" \
      org.opencontainers.image.description="The relay with buildah, buildctl and git for the build worker" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install --yes --no-install-recommends \
        git openssh-client ca-certificates buildah fuse-overlayfs uidmap \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /home/relay --create-home \
        --shell /usr/sbin/nologin relay \
 && echo "relay:100000:65536" > /etc/subuid \
 && echo "relay:100000:65536" > /etc/subgid
COPY --from=buildkit /usr/bin/buildctl /usr/local/bin/buildctl
COPY --from=build /opt/relay /opt/relay
ENV PATH=/opt/relay/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BUILDAH_ISOLATION=chroot
USER 10001:10001
WORKDIR /home/relay
EXPOSE 8099
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; e = os.environ; u.urlopen('http://127.0.0.1:%s/healthz' % e.get('RELAY_HTTP__METRICS_PORT', e.get('RELAY_HTTP__PORT', '8099')), timeout=4)"]
ENTRYPOINT ["relay"]
ENV RELAY_HTTP__METRICS_PORT=8099
CMD ["worker", "build"]
