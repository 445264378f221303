# A stand-in for docker.io/library/postgres in the compose end-to-end test only: this machine
# cannot pull from Docker Hub, so the test builds Debian's PostgreSQL on its own base image.
# It honours the part of the official image's interface that docker/compose.yaml uses:
# POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE, the data directory, pg_isready.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY --chmod=755 tests/deploy/podman/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
