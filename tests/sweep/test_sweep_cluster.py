"""A 3-node Ray cluster (``ray.cluster_utils.Cluster``) loses a worker node mid-sweep.

The head has no CPUs, so trials run on the two 1-CPU worker nodes. As soon as a trial has
checkpointed its first epoch, the node running it (the one whose raylet is its ancestor) is
removed; the trial is retried from that checkpoint on the other node, continues the same
MLflow run, and every trial finishes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

import ray
from ray.cluster_utils import Cluster
from sweep_helpers import ancestors, metric_steps, sweep_runs, wait_for, write_spec

from ssvae_core.sweep import runner, spec

EPOCHS = 12


def _raylet_pid(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def _last_result(trial_dir: Path) -> dict[str, Any]:
    """The trial's last result as the driver logged it ({} until it has)."""
    path = trial_dir / "result.json"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(json.loads(lines[-1])) if lines else {}


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="since 075b7fe (checkpoint pruning) the node is removed after its trial ended, or the "
    "trial is not resumed; passes at 5b36e64; cause not found (stop 30's note)",
)
def test_a_lost_worker_node_mid_sweep_and_every_trial_still_finishes(workdir: Path) -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    body = """\
        grid: {method: [gaussian, bilinear], train.seed: [0, 1]}
        max_concurrent: 2
        max_failures: 3
        """
    base = {"data.n_frames": 200, "train.epochs": EPOCHS}
    sweep = spec.load(write_spec(workdir, "nodes", body, base))
    lost: dict[str, Any] = {}

    def remove_the_node_of_the_first_checkpointed_trial() -> None:
        first = wait_for(lambda: sorted(workdir.glob("runs/nodes/grid/*/checkpoint_000000")), 240)
        if not first:
            return
        trial_dir = first[0].parent
        above = set(ancestors(int(wait_for(lambda: _last_result(trial_dir).get("pid"), 30))))
        node = next(w for w in workers if _raylet_pid(w) in above)
        lost["trial"] = trial_dir.name
        cluster.remove_node(node)

    remover = threading.Thread(target=remove_the_node_of_the_first_checkpointed_trial)
    remover.start()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    try:
        runner.run_sweep(sweep, address=cluster.address, tracking_uri=uri, storage_path="runs")
    finally:
        remover.join(timeout=60)
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()

    assert "trial" in lost, "no node was removed"
    trials = pd.read_csv(workdir / "runs" / "nodes" / "trials.csv")
    assert sorted(trials["status"]) == ["ok"] * 4
    assert (trials["epochs"] == EPOCHS).all()
    hit = _last_result(workdir / "runs" / "nodes" / "grid" / lost["trial"])
    assert hit["iterations_since_restore"] < hit["training_iteration"]  # resumed, not redone
    [parent], children = sweep_runs(uri, "nodes")
    assert len(children) == 4
    assert {run.info.status for run in [parent, *children]} == {"FINISHED"}
    for child in children:
        assert metric_steps(uri, child.info.run_id, "probe_error_px") == list(range(EPOCHS + 1))
