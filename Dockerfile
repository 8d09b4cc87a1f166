# The operator's container image: `dsr-operator run` as a non-root user that needs
# no writable path (the Helm chart runs it with a read-only root filesystem).
#
#   docker build -t mixpanel-dsr-operator:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# tests/e2e/test_image.py runs the builder stage's install steps in a clean virtual
# environment and starts the result against a real kube-apiserver; keep them plain.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy

# The same uv as the Makefile pins.
RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY operator/ operator/

# The locked runtime dependencies (hashes checked, no resolution; not the dev extra), then
# the wheel of this project (the operator, kubectl dsr and the sandbox; the local control
# plane and the demo stay out of it: docs/design.md#packaging), into a fresh virtual
# environment; bytecode is compiled here because the running container cannot write it.
RUN uv export --frozen --no-dev --no-emit-project --format requirements.txt --output-file requirements.txt \
    && uv build --wheel --out-dir dist \
    && uv venv --python /usr/local/bin/python3 /opt/venv \
    && uv pip install --python /opt/venv/bin/python --compile-bytecode --require-hashes --no-deps --requirement requirements.txt \
    && uv pip install --python /opt/venv/bin/python --compile-bytecode --no-deps dist/mixpanel_dsr_operator-*.whl

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mixpanel-dsr-operator" \
      org.opencontainers.image.description="Kubernetes operator that carries out GDPR/CCPA data subject requests against Mixpanel" \
      org.opencontainers.image.source="https://github.com/mixpanel-dsr-operator/mixpanel-dsr-operator" \
      org.opencontainers.image.documentation="https://github.com/mixpanel-dsr-operator/mixpanel-dsr-operator/tree/main/charts/mixpanel-dsr-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-trixie"

# A named user for the numeric UID (getpass and kopf's peer identity look it up).
RUN groupadd --system --gid 65532 dsr \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin dsr

COPY --from=builder /opt/venv /opt/venv

# No bytecode or other writes at run time; logs as JSON lines, unbuffered.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DSR_OPERATOR_LOG_FORMAT=json

USER 65532:65532
# 8080: Prometheus metrics; 8081: /healthz.
EXPOSE 8080 8081
ENTRYPOINT ["dsr-operator", "run"]
