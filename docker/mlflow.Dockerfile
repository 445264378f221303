# The team's tracking server: MLflow with basic auth (the `auth` extra) and the PostgreSQL
# driver; started by docker/mlflow-server.sh, which reads every secret from a file.
#   docker build -f docker/mlflow.Dockerfile -t ssvae-mlflow:3.17.2 .      (from the repository root)
#   docker compose -f docker/compose.yaml up -d --build                    (what it is for)
# BASE_IMAGE: any Debian-like image with python3 (>= 3.10) and its venv module.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# No torch here: the server only stores runs, it never trains.
COPY docker/mlflow-requirements.txt /tmp/mlflow-requirements.txt
RUN python3 -m venv /opt/mlflow \
    && /opt/mlflow/bin/pip install --no-cache-dir -r /tmp/mlflow-requirements.txt \
    && rm /tmp/mlflow-requirements.txt
ENV PATH=/opt/mlflow/bin:$PATH PYTHONUNBUFFERED=1

COPY --chmod=755 docker/mlflow-server.sh /usr/local/bin/mlflow-server.sh

# A non-root user owns the artifact volume's mount point (a named volume starts as a copy of it).
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /mlflow --create-home mlflow \
    && mkdir -p /mlflow/artifacts && chown -R mlflow:mlflow /mlflow
USER 10001:10001
WORKDIR /mlflow

# Inside the container only: compose.yaml publishes it on the host's 127.0.0.1 (and defines the
# healthcheck, on /health, the one path that needs no credentials).
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/mlflow-server.sh"]
