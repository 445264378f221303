"""A 3-node Ray cluster (``ray.cluster_utils.Cluster``) loses a worker node mid-sweep.

The head has no CPUs, so trials run on the two 1-CPU worker nodes. Once a trial has
checkpointed a few epochs, the node running it (the one whose raylet is its ancestor) is
removed; the trial is retried from that checkpoint on the other node, continues the same
MLflow run, and every trial finishes.
"""

from __future__ import annotations

import json
import os
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

EPOCHS = 40


def _raylet_pid(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def _pids_working_in(name: str) -> list[int]:
    """PIDs of the processes whose working directory is named `name`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).name == name:
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def _last_result(trial_dir: Path) -> dict[str, Any]:
    """The trial's last result as the driver logged it ({} until it has)."""
    path = trial_dir / "result.json"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(json.loads(lines[-1])) if lines else {}


@pytest.mark.slow
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

    def remove_the_node_of_a_running_trial() -> None:
        """Once a trial has checkpointed and is far from its end, remove the node its process
        runs on (the raylet above it). The trial is found by its checkpoints and its process
        by its working directory (Ray's per-trial one, named after the trial), both live:
        ``result.json`` is written in bursts, and a finished trial's process may already
        serve another trial (``reuse_actors``)."""

        def running() -> tuple[Path, int] | None:
            for trial_dir in sorted(workdir.glob("runs/nodes/grid/*/")):
                started = (trial_dir / "checkpoint_000002").exists()
                if started and not (trial_dir / f"checkpoint_{EPOCHS // 2:06d}").exists():
                    pids = _pids_working_in(trial_dir.name)
                    return (trial_dir, pids[0]) if len(pids) == 1 else None
            return None

        found = wait_for(running, 240, interval=0.05)
        if found is None:
            return
        trial_dir, pid = found
        node = next(w for w in workers if _raylet_pid(w) in ancestors(pid))
        lost["trial"] = trial_dir.name
        cluster.remove_node(node)

    remover = threading.Thread(target=remove_the_node_of_a_running_trial)
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
    grid = workdir / "runs" / "nodes" / "grid"
    reports = [_last_result(d)["training_iteration"] for d in grid.glob("*/")]
    # Ray restores a trial's iteration count with its checkpoint: a trainable that trained
    # again from an older state than that checkpoint (from scratch: 45) reports more
    assert reports == [EPOCHS + 2] * 4  # epochs 0..EPOCHS and the end: no epoch redone
    hit = _last_result(grid / lost["trial"])
    assert hit["iterations_since_restore"] < hit["training_iteration"]  # resumed
    [parent], children = sweep_runs(uri, "nodes")
    assert len(children) == 4
    assert {run.info.status for run in [parent, *children]} == {"FINISHED"}
    for child in children:
        assert metric_steps(uri, child.info.run_id, "probe_error_px") == list(range(EPOCHS + 1))


def test_optunas_note_on_each_study_is_not_printed() -> None:
    """'[I ...] A new study created in memory with name: ...' for every searched cell."""
    import subprocess
    import sys

    make = (
        "from ssvae_core.sweep import space, spec; "
        "space.searcher(spec.load('sweeps/optuna-lr-lengthscale.yaml')); "
    )
    said = [
        subprocess.run(
            [sys.executable, "-c", code + "import optuna; optuna.create_study()"],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        ).stderr
        for code in ("", make)
    ]  # fmt: skip
    assert "A new study created" in said[0] and "A new study created" not in said[1], said
