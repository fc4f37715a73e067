# syntax=docker/dockerfile:1
# rollbackd: build the wheels with the toolchain, run them without it.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rollbackd ./rollbackd
# Wheels for rollbackd and every runtime dependency, resolved from pyproject.toml.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="rollbackd" \
      org.opencontainers.image.description="Undoes a bad Kubernetes Deployment change when its PromQL rules breach, and tells DingTalk." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/rollbackd/rollbackd"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/rollbackd/bin:$PATH
# The same install as `make test` does (pip install of the package), from the built wheels:
# no compiler, no network, no build tools in this stage.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/rollbackd \
    && /opt/rollbackd/bin/pip install --no-cache-dir --no-index --find-links /wheels rollbackd \
    && /opt/rollbackd/bin/pip uninstall --yes pip
# Numeric, so Kubernetes can check runAsNonRoot; nothing is written outside /tmp.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["rollbackd"]
CMD ["run", "--config", "/etc/rollbackd/config.yaml"]
