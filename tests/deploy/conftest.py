"""Fixtures of the deployment tests: KubeRay's CRDs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from deploy_checks import REPO, shared_kuberay_dir, unavailable

# The sweep tests' helpers (free_port, wait_for, sweep_runs, ...) serve here too.
sys.path.insert(0, str(REPO / "tests" / "sweep"))


@pytest.fixture(scope="session")
def kuberay_crds() -> Path:
    """The directory of KubeRay's CRD files (shared/kuberay, else tests/deploy/kuberay)."""
    crds = shared_kuberay_dir()
    if not any(crds.glob("ray.io_rayclusters.yaml*")):
        unavailable(f"KubeRay CRDs not found at {crds} (SSVAE_SHARED_DIR/kuberay/ray.io_*.yaml)")
    return crds
