# syntax=docker/dockerfile:1
# qosgate: the admission webhook and the scheduler extender, one image, `qosgate serve webhook|extender`.
#   docker build -t ghcr.io/qosgate/qosgate:0.1.0 .
#
# Both stages use the same base image: the virtualenv's python is a link to the base's interpreter.
# Pinned by version tag; pin the digest too (python:3.11.13-slim-bookworm@sha256:…) for reproducible
# builds.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): no tests, manifests or local certificates.
COPY pyproject.toml README.md ./
COPY qosgate ./qosgate
COPY webhook ./webhook
COPY extender ./extender
COPY certs ./certs
COPY agent ./agent
# Build the wheel, install it and its dependencies into a virtualenv, byte-compile everything now
# (the root filesystem is read-only at run time), and drop the installers from the runtime.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/qosgate \
 && /opt/qosgate/bin/pip install /wheels/qosgate-*.whl \
 && /opt/qosgate/bin/pip uninstall --yes pip setuptools \
 && python -m compileall -q /opt/qosgate/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="qosgate" \
      org.opencontainers.image.description="KEP-3008 QoS-class admission webhook and memory.min scheduler extender" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/qosgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/qosgate /opt/qosgate
# Numeric, so the kubelet can check runAsNonRoot without a passwd entry; matches the manifests'
# runAsUser/runAsGroup 65532.
USER 65532:65532
# webhook HTTPS, extender HTTPS, webhook health, extender health, node agent health
EXPOSE 8443 8444 9440 9441 9442
# Exec form: no shell at run time.
ENTRYPOINT ["qosgate"]
CMD ["--help"]
