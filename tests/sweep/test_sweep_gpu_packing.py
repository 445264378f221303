"""Fractional GPUs without a GPU: Ray told of two GPUs packs `sweeps/paper.yaml`'s trial shape.

Ray schedules declared GPUs (``ray.init(num_gpus=2)``) as it does real ones and sets each
trial's ``CUDA_VISIBLE_DEVICES``; only torch, here a CPU build, cannot use them. So eight
trials of paper.yaml's resource shape (``cpu: 1, gpu: 0.25``, ``train.device: auto``) at smoke
size show the packing itself: four trials on each GPU at once, each trial given one of the
declared GPUs, and ``auto`` falling back to the CPU with one warning per trial process.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

import ray
from sweep_helpers import REPO, write_spec

from ssvae_core.sweep import runner, spec

GPUS = 2
WARNING = "GpuNotUsedWarning: train.device: auto, and CUDA_VISIBLE_DEVICES="


def test_paper_yaml_asks_for_the_shape_tested_here() -> None:
    paper = spec.load(REPO / "sweeps" / "paper.yaml")
    assert (paper.resources.cpu, paper.resources.gpu) == (1, 0.25)
    assert {cell.config.train.device for cell in paper.cells} == {"auto"}


class LowestFreeGpus:
    """Samples, in a thread, the fewest GPUs Ray had free while the sweep ran."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.lowest = interval, float(GPUS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            free = ray.available_resources().get("GPU", 0.0)  # Ray leaves out a resource at 0
            self.lowest = min(self.lowest, free)
            self._stop.wait(self.interval)

    def __enter__(self) -> LowestFreeGpus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def ray_with_two_gpus() -> Iterator[Path]:
    """Ray on this machine told it has two GPUs; -> its temporary folder (the trials' logs).

    A short folder of our own: Ray's socket paths must stay under 108 characters."""
    temp = Path(tempfile.mkdtemp(prefix="ssvae-ray-", dir="/tmp"))
    ray.init(
        num_cpus=4 * GPUS,
        num_gpus=GPUS,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(temp),
    )
    try:
        yield temp
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_four_trials_share_each_declared_gpu_and_auto_falls_back_to_cpu_once(
    workdir: Path, ray_with_two_gpus: Path
) -> None:
    body = """\
        grid: {method: [gaussian], train.seed: [0, 1, 2, 3, 4, 5, 6, 7]}
        resources: {cpu: 1, gpu: 0.25}
        """
    sweep = spec.load(write_spec(workdir, "packing", body, {"train.device": "auto"}))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with LowestFreeGpus() as free:
        result = runner.run_sweep(sweep, tracking_uri=uri, storage_path="runs")
    trials = result.trials
    assert sorted(trials["status"]) == ["ok"] * 8, trials[["status", "error"]]

    # each trial was given exactly one of the declared GPUs, four trials on each
    visible = [str(v) for v in trials["cuda_visible_devices"]]
    assert set(visible) <= {str(gpu) for gpu in range(GPUS)}, visible
    assert Counter(visible) == {str(gpu): 4 for gpu in range(GPUS)}
    # ... by four processes each (one actor per trial, holding its quarter while it lives) ...
    processes = {gpu: set() for gpu in visible}
    for trial_dir in (workdir / "runs" / "packing" / "grid").glob("train_trial_*"):
        last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
        processes[str(last["cuda_visible_devices"])].add(last["pid"])
    assert {gpu: len(pids) for gpu, pids in processes.items()} == {"0": 4, "1": 4}
    # ... at once: all eight quarters were held together, so four shared each GPU
    assert free.lowest == 0.0, f"at least {free.lowest} GPU stayed free throughout"

    # `auto` without CUDA trained on the CPU, and each trial's process said so once
    assert set(trials["device"]) == {"cpu"}
    found = ray_with_two_gpus.glob("session_*/artifacts/*/grid/working_dirs/*/stderr")
    logs = sorted({log.resolve() for log in found})  # "session_latest" links to the session
    assert len(logs) == 8, logs
    said = sorted(log.read_text().count(WARNING) for log in logs)
    assert said == [1] * 8, said
    named = sorted(
        log.read_text().split(WARNING, 1)[1].split(" ", 1)[0] for log in logs
    )  # the GPU each warning names
    assert named == sorted(visible)
