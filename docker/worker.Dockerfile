# A Ray worker image for GPU nodes: CUDA torch from PyPI plus this package with the sweep extra.
#   docker build -f docker/worker.Dockerfile -t ssvae-worker .
FROM python:3.11-slim
WORKDIR /opt/ssvae
COPY pyproject.toml README.md ./
COPY ssvae_core ./ssvae_core
COPY sweeps ./sweeps
RUN pip install --no-cache-dir -e '.[sweep]'
