"""Fixtures of the deployment tests: KubeRay's CRDs (skipped where shared/ is absent)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from deploy_checks import REPO, shared_kuberay_dir, unavailable

# The sweep tests' helpers (free_port, wait_for, sweep_runs, ...) serve here too.
sys.path.insert(0, str(REPO / "tests" / "sweep"))


@pytest.fixture(scope="session")
def kuberay_crds() -> Path:
    """The directory of KubeRay's CRD files (shared/kuberay beside the checkout, as in CI)."""
    crds = shared_kuberay_dir()
    if not (crds / "ray.io_rayclusters.yaml").exists():
        unavailable(
            f"KubeRay CRDs not found at {crds} (a plain clone has no shared/; CI has it, or set "
            "SSVAE_SHARED_DIR to a directory holding kuberay/ray.io_*.yaml)"
        )
    return crds
