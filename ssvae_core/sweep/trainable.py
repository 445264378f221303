"""The plain function Ray Tune runs for one trial: `train.fit`, reported and checkpointed.

The runner wraps it as ``tune.with_parameters(train_trial, spec=..., videos=..., target=...)``:
the videos are simulated once per sweep in the driver and put in Ray's object store once, so
every trial on a node reads the same copy (never regenerated per trial).

A trial works in a local directory. On start it copies the latest checkpoint there
(``tune.get_checkpoint()``), so `fit` resumes from ``state.pt`` and the MLflow run id and any
pending MLflow operations come back with it. After every epoch `fit` writes ``state.pt``
there, the epoch goes to MLflow, and ``tune.report(metrics, checkpoint=dir)`` persists the
directory. A diverged run is a result: it is reported with ``status=diverged`` and returns
normally, so the sweep goes on. The last report (``final=True``) carries the run's summary
and a checkpoint holding whatever MLflow could not take yet.

With ``resources.fuse`` a Ray trial trains a group of cells as one model (`_train_fused`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from ray import tune

from ssvae_core import allocator, preflight
from ssvae_core.balls import Video, simulate
from ssvae_core.config import DataConfig, RunConfig
from ssvae_core.frames import resolve_device
from ssvae_core.fused import fit_fused
from ssvae_core.metrics import SEARCHABLE
from ssvae_core.sweep import tracking, ui
from ssvae_core.sweep.runlog import RunLog
from ssvae_core.sweep.spec import SweepSpec
from ssvae_core.train import RunResult, fit

# Every report carries every searchable metric (NaN where a run has none, e.g. the MI of an
# untrained encoder): Ray rejects a result that lacks the metric it tunes.
NO_METRICS: dict[str, float] = dict.fromkeys(SEARCHABLE, math.nan)


def _mlflow_fields(runlog: RunLog) -> dict[str, Any]:
    """What the driver's table wants to know about the trial's MLflow run."""
    return {"mlflow_run_id": runlog.run_id or "", "mlflow_pending": len(runlog.pending())}


def placement(cfg: RunConfig) -> dict[str, str]:
    """Where the trial trains: ``device``, what ``train.device`` resolves to in this process
    (``auto`` -> cuda or cpu), and ``cuda_visible_devices``, the GPUs Ray gave it ("" without
    a ``resources.gpu`` share; four trials at ``gpu: 0.25`` name the same one)."""
    return {
        "device": resolve_device(cfg.train.device).type,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


def _check_gpu_share(spec: SweepSpec, cfg: RunConfig, where: dict[str, str], runs: int = 1) -> None:
    """A trial on CUDA with a ``resources.gpu`` share must fit it (checked by the driver too
    where the sweep started Ray itself: `sweep.preflight`). Without a share Ray 2.60 still
    shows the node's GPUs; such a trial plans on no share and is not checked."""
    if where["device"] == "cuda" and spec.resources.gpu > 0:
        preflight.check_gpu_share(cfg, spec.resources.gpu, runs)


def run_name(params: Mapping[str, Any]) -> str:
    """A short run name for MLflow's runs table: the values, seeds as ``s0``
    (``method=gaussian, objective.n_negatives=8, train.seed=0`` -> ``gaussian 8 s0``)."""
    prefixes = {"train.seed": "s", "data.seed": "d"}
    parts = [
        f"{prefixes.get(key, '')}{value:.3g}" if isinstance(value, float)
        else f"{prefixes.get(key, '')}{value}"
        for key, value in params.items()
    ]  # fmt: skip
    return " ".join(parts) or "base"


def trial_key(spec: SweepSpec, config: Mapping[str, Any], trial_id: str) -> str:
    """A trial's identity in its sweep: its grid cell, or (in a search) Ray's trial id."""
    if spec.search is None:
        return f"cell-{int(config['cell']):03d}"
    return f"trial-{trial_id}"


def _video(videos: Mapping[DataConfig, Video], cfg: RunConfig) -> Video:
    """The sweep's shared video of `cfg.data`, or (a searched data.* key) its own."""
    video = videos.get(cfg.data)
    return simulate(cfg.data.balls, cfg.data.seed) if video is None else video


@contextmanager
def _work_dir() -> Iterator[Path]:
    """A local directory holding the trial's latest checkpoint (if Ray restored one); it is
    removed when the trial ends."""
    work = Path(tempfile.mkdtemp(prefix="ssvae-trial-"))
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(str(work))
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish(runlog: RunLog, result: RunResult, video: Video, where: dict[str, str]) -> dict:
    """The run's end sent to MLflow (its files dropped once logged: no need to carry them);
    -> its summary for Ray: the last epoch's row, `RunResult.metrics`, MLflow's state."""
    if tracking.finish_trial(runlog, result, video):
        shutil.rmtree(runlog.directory / "artifacts", ignore_errors=True)
    summary = {**NO_METRICS, **result.history[-1], **result.metrics()}
    summary["epoch"] = len(result.history) - 1
    return summary | _mlflow_fields(runlog) | where


def train_trial(
    params: dict[str, Any],
    *,
    spec: SweepSpec,
    videos: Mapping[DataConfig, Video],
    target: tracking.Target,
) -> None:
    """Train the trial of this Ray config (its cell and searched values); report every epoch
    and at the end."""
    torch.set_num_threads(1)
    allocator.reuse_freed_memory()  # huge pages come with the worker's environment
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    if spec.search is None and len(spec.members(int(params["cell"]))) > 1:
        return _train_fused(params, spec=spec, videos=videos, target=target)
    labels = spec.trial_params(params)
    cfg = spec.trial_config(labels)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    name = run_name(labels)
    trial = (trial_id, name if spec.search is None else f"{name} [{trial_id}]")
    where = placement(cfg)
    _check_gpu_share(spec, cfg, where)
    video = _video(videos, cfg)
    with _work_dir() as work:
        key = trial_key(spec, params, trial_id)
        colour = ui.cell_colour(spec, int(params["cell"]))
        runlog = tracking.start_trial(target, work, key, trial, cfg, labels, colour)

        def report(row: dict[str, Any], _checkpoint_dir: str | None) -> None:
            tracking.log_epoch(runlog, row)
            metrics = {**NO_METRICS, **row, "status": "running", **_mlflow_fields(runlog), **where}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))

        result = fit(cfg, report=report, checkpoint_dir=str(work), video=video)
        final = {**_finish(runlog, result, video, where), "final": True}
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(work)))


def _mean(rows: Any, key: str) -> float:
    """The mean of `key` over rows that measured it (NaN for none)."""
    values = [r[key] for r in rows if isinstance(r.get(key), float) and math.isfinite(r[key])]
    return sum(values) / len(values) if values else math.nan


def _train_fused(
    params: dict[str, Any],
    *,
    spec: SweepSpec,
    videos: Mapping[DataConfig, Video],
    target: tracking.Target,
) -> None:
    """The cells of one fused group (``resources.fuse``) as one model (`fused.fit_fused`):
    each cell keeps its own MLflow run and its own state in ``cell-NNN/`` of the trial's
    checkpoint. Ray gets one report per epoch (the members' mean probe and loss, for the
    progress lines) and a final one whose ``members`` holds each cell's own summary."""
    cells = spec.members(int(params["cell"]))
    configs = [spec.cells[c].config for c in cells]
    trial_id = tune.get_context().get_trial_id()
    where = placement(configs[0])
    _check_gpu_share(spec, configs[0], where, runs=len(cells))
    video = _video(videos, configs[0])
    with _work_dir() as work:
        runlogs, dirs = [], []
        for cell in cells:
            labels = spec.trial_params({"cell": cell})
            key = trial_key(spec, {"cell": cell}, trial_id)
            dirs.append(str(work / key))
            os.makedirs(dirs[-1], exist_ok=True)
            colour = ui.cell_colour(spec, cell)
            trial = (trial_id, run_name(labels))
            cfg = spec.cells[cell].config
            runlogs.append(
                tracking.start_trial(target, Path(dirs[-1]), key, trial, cfg, labels, colour)
            )

        def member_report(runlog: RunLog) -> Any:
            return lambda row, _dir: tracking.log_epoch(runlog, row)

        def after_epoch(epoch: int, rows: dict[int, dict[str, Any]]) -> None:
            mean = {key: _mean(rows.values(), key) for key in ("probe_error_px", "loss")}
            metrics = {**NO_METRICS, "epoch": epoch, **mean, "status": "running", **where}
            metrics |= {"fused": len(cells)}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))

        results = fit_fused(
            configs,
            reports=[member_report(r) for r in runlogs],
            checkpoint_dirs=dirs,
            video=video,
            after_epoch=after_epoch,
        )
        members = {
            str(cell): _finish(runlog, result, video, where)
            for cell, runlog, result in zip(cells, runlogs, results, strict=True)
        }
        ok = sum(m["status"] == "ok" for m in members.values())
        final = {**NO_METRICS, "final": True, "members": members, "fused": len(cells), **where}
        final |= {key: _mean(members.values(), key) for key in ("probe_error_px", "loss")}
        final |= {"epoch": max(m["epoch"] for m in members.values())}
        final["status"] = "ok" if ok == len(cells) else f"{ok} of {len(cells)} ok"
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(work)))
