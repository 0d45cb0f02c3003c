# syntax=docker/dockerfile:1
# The tokenscale operator image: `tokenscale run` as a non-root user (the Helm chart in
# charts/tokenscale runs it with a read-only root filesystem and an emptyDir at /tmp). Slim: the
# package without its `sim` extra (matplotlib, rich), which only `tokenscale simulate` needs.
# .github/workflows/release.yaml builds it for linux/amd64 and linux/arm64 on a tag v<version>:
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/tokenscale/tokenscale:0.1.0 .

ARG PYTHON_IMAGE=python:3.12-slim

# --- builder: the project's wheel and the wheels of its dependencies ----------------------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: only the installed wheels ----------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Only the builder's wheels (--no-index), so their versions are pinned by the build itself.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels tokenscale
# 65532: a numeric non-root user (no passwd entry needed), so `runAsNonRoot` can verify it.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["tokenscale"]
CMD ["run"]
