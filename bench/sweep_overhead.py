"""Sweep overhead: `ssvae sweep` against the same trials run back to back, and memory 4 vs 1.

1. Time. The smoke sweep (``sweeps/smoke.yaml``) end to end through `run_sweep` - Ray start,
   MLflow parent/child runs, checkpoints, tables, Fig. 1C - against the same trial configs
   run back to back with `train.fit` in one process on the shared video, divided by the
   sweep's concurrency. Target: ratio <= 1.10. Also the ratio inside the trials (the sum of
   Ray's ``time_total_s`` against the sum of bare `fit` times), which excludes start-up.
   The smoke trials are ~0.06 s of compute, so a second, medium sweep (the same 2 x 2 grid
   at the `small` preset, 10 epochs) shows the overhead once trials do real work.
   Where the rest goes: each trial's bare fit against its time in the sweep; the floor the
   trials' own lengths set (their fit times started in Ray's order, longest first, on
   `concurrency` slots, with no overhead: a grid of uneven trials cannot beat it); and the CPU
   seconds of every process of the sweep by kind (trials, driver, Ray's daemons) against the
   CPU seconds the wall time offered: what the sweep's processes left unused (an upper bound
   on idle: other programs count, and a process that ends loses up to one sampling interval),
   what the workers spent beyond the bare fits' CPU seconds, and the ratio no scheduling could
   beat (every CPU second the sweep spent, on all cores with none ever idle, against the
   ideal).
2. Memory. Four trials on a paper-size video (256x256 px), once one at a time and once four
   at a time; the peak, over the run, of the summed proportional set size (PSS: shared pages
   counted once) of the driver and every process below it (Ray's GCS, raylet, workers), and
   of the trial workers alone. Target: 4-at-a-time <= 1.5x one-at-a-time (the video is put in
   Ray's object store once and every trial reads that copy). Also the four as one fused trial
   (``resources.fuse: 4``): one process, so one torch runtime instead of four.

    python bench/sweep_overhead.py                 # both (about 10 minutes on 2 cores)
    python bench/sweep_overhead.py --only time     # or: --only memory

The MLflow store is a sqlite file in a temporary directory, created before timing starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import torch

from ssvae_core import allocator
from ssvae_core.balls import Video, simulate
from ssvae_core.frames import frames_to_tensor
from ssvae_core.sweep import runner, space, spec, tracking
from ssvae_core.train import fit

REPO = Path(__file__).resolve().parents[1]
# The smoke trials are ~0.06 s of compute each, so the smoke ratio is all fixed cost; the
# same 2 x 2 grid at the `small` preset with 10 epochs (~15 s a trial) shows the amortised one.
MEDIUM_SPEC = """\
name: medium
base: {preset: small, train.epochs: 10, train.device: cpu}
grid: {method: [gaussian, bilinear], train.seed: [0, 1]}
resources: {cpu: 1}
max_concurrent: 2
"""
MEMORY_SPEC = """\
name: memory
base: {preset: paper, data.n_frames: 300, train.epochs: 2, train.device: cpu,
       probe.every_epochs: 1}
grid: {train.seed: [0, 1, 2, 3]}
resources: {cpu: 1}
"""


def _pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found += [child]
            todo.append(child)
    return found


# Ray's own agents also name themselves ray::...; they are daemons, not trial workers
RAY_AGENTS = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")


def _title(pid: int) -> bytes:
    """The process's argv[0] (Ray's workers set it to ``ray::...``); b"" if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return b""


def _worker_title(title: bytes) -> bool:
    """Whether argv[0] `title` is a Ray worker's (a trial's, or one idle for the next), not
    one of Ray's agents."""
    return title.startswith(b"ray::") and not title.startswith(RAY_AGENTS)


def _is_worker(pid: int) -> bool:
    return _worker_title(_title(pid))


WORKERS = "Ray workers (the trials)"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kind(pid: int) -> str:
    """What a process of the sweep is: the driver, a Ray worker, or its program's name
    (``raylet``, ``gcs_server``, ``log_monitor.py``, ...)."""
    if pid == os.getpid():
        return "driver (Tune's loop, MLflow parent, tables)"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    if _worker_title(argv[0]):
        return WORKERS
    if argv[0].startswith(RAY_AGENTS):
        return argv[0].decode().removeprefix("ray::")
    script = next((a for a in argv[1:] if a.endswith(b".py")), argv[0])
    return os.path.basename(script.decode(errors="replace")) or "?"


class CpuTime:
    """Samples, every `interval` s, the CPU seconds of this process and its descendants;
    `by_kind()` sums each process's last reading by `_kind` (a process that ends between
    two samples loses at most `interval` s of its time)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.seen: dict[int, tuple[str, float]] = {}  # pid -> (kind, CPU s at its last sample)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in [os.getpid(), *_descendants(os.getpid())]:
                # read each time: a worker starts as setup_worker.py, then names itself ray::
                _, last = self.seen.get(pid, ("", 0.0))
                kind = _kind(pid)
                if kind != "?":
                    self.seen[pid] = (kind, max(last, _cpu_seconds(pid)))
            self._stop.wait(self.interval)

    def by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, (kind, seconds) in self.seen.items():
            seconds -= self.before if pid == os.getpid() else 0.0
            totals[kind] = totals.get(kind, 0.0) + seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def __enter__(self) -> CpuTime:
        self.before = _cpu_seconds(os.getpid())  # the driver's time before the sweep
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakMemory:
    """Samples the summed PSS of this process and its descendants every `interval` s."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.total_mib, self.workers_mib = interval, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = [os.getpid(), *_descendants(os.getpid())]
            sizes = {pid: _pss_kib(pid) / 1024 for pid in pids}
            self.total_mib = max(self.total_mib, sum(sizes.values()))
            workers = sum(size for pid, size in sizes.items() if _is_worker(pid))
            self.workers_mib = max(self.workers_mib, workers)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def makespan(seconds: list[float], slots: int) -> float:
    """The wall time of jobs of these lengths started in this order, each on the first free
    one of `slots` (as Ray starts a grid's trials): the floor for a sweep with no overhead."""
    free = [0.0] * slots
    for length in seconds:
        free[free.index(min(free))] += length
    return max(free)


def _quiet_run(sweep: spec.SweepSpec, workdir: Path) -> tuple[float, pd.DataFrame]:
    """Wall seconds of `run_sweep` and its trials table (tracking in `workdir`)."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    warm = tracking.SweepTracking(uri, workdir / "warm", sweep)
    warm.connect()  # the MLflow tables exist before the clock starts
    tic = time.perf_counter()
    runner.run_sweep(sweep, tracking_uri=uri, storage_path=workdir / "runs")
    seconds = time.perf_counter() - tic
    return seconds, pd.read_csv(workdir / "runs" / sweep.name / "trials.csv")


def measure_time(sweep: spec.SweepSpec) -> dict[str, float]:
    torch.set_num_threads(1)
    # Freed memory kept, as in each trial's worker (sweep.trainable); the workers' huge pages
    # (HUGE_PAGES_ENV) would have to be set before this script imports torch.
    allocator.reuse_freed_memory()
    data = sweep.cells[0].config.data
    video = simulate(data.balls, data.seed)
    fit(sweep.cells[0].config, video=video)  # warm-up, as a warm worker would be
    tic, cpu_tic = time.perf_counter(), time.process_time()
    fit_seconds = []
    for cell in sweep.cells:
        start = time.perf_counter()
        fit(cell.config, video=video)
        fit_seconds.append(time.perf_counter() - start)
    sequential, sequential_cpu = time.perf_counter() - tic, time.process_time() - cpu_tic
    concurrency = min(sweep.execution.max_concurrent or os.cpu_count() or 1, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as scratch, CpuTime() as cpu:
        wall, trials = _quiet_run(sweep, Path(scratch))
    ideal = sequential / concurrency
    name = sweep.name
    # the floor: the bare fit times in Ray's start order, with no overhead at all
    groups = {group[0]: group for group in sweep.groups}
    ray_order = [sum(fit_seconds[c] for c in groups[first]) for first in space.start_order(sweep)]
    floor = makespan(ray_order, concurrency)
    print(f"\n{name}: each trial, bare fit s against its time in the sweep (Ray's time_total_s)")
    keys = [key for key, _ in sweep.axes]
    in_sweep = {tuple(str(v) for v in row): s for *row, s in trials[[*keys, "seconds"]].values}
    for cell, bare in zip(sweep.cells, fit_seconds, strict=True):
        ray_s = in_sweep.get(tuple(str(v) for v in cell.row(sweep.axes).values()), math.nan)
        print(f"  {cell.label:<48} {bare:7.2f} {ray_s:7.2f}  {ray_s / bare:5.2f}x")
    by_kind = cpu.by_kind()
    where = {f"{name}: CPU s, {kind}": seconds for kind, seconds in by_kind.items()}
    cores = os.cpu_count() or 1
    used = sum(by_kind.values())
    workers = by_kind.get(WORKERS, 0.0)
    return {
        f"{name}: trials": len(sweep.cells),
        f"{name}: concurrency": concurrency,
        f"{name}: sweep wall s": wall,
        f"{name}: back-to-back fit s": sequential,
        f"{name}: ideal s (back-to-back / concurrency)": ideal,
        f"{name}: overhead ratio (target <= 1.10)": wall / ideal,
        f"{name}: in-trial ratio (sum time_total_s / sum fit s)": (
            trials["seconds"].sum() / sum(fit_seconds)
        ),
        f"{name}: the trials' own tail, fit s in Ray's start order / ideal": floor / ideal,
        f"{name}: CPU s available (wall x {cores} cores)": wall * cores,
        **where,
        f"{name}: CPU s not used by the sweep (idle, or other programs)": wall * cores - used,
        f"{name}: CPU s of the bare fits (back to back, this process)": sequential_cpu,
        f"{name}: CPU s the workers spend beyond the bare fits": workers - sequential_cpu,
        # What no scheduling can beat: every CPU second the sweep's processes spent, on all
        # cores with none ever idle (the trials on their `concurrency` slots at most).
        f"{name}: ratio with no core ever idle (CPU s spent / cores / ideal)": (
            max(used / cores, workers / concurrency) / ideal
        ),
    }


@ray.remote
def _reads_shared_copy(videos: dict[Any, Video]) -> bool:
    """In a worker, as in a trial: do the frames alias the object store's read-only buffer?"""
    video = next(iter(videos.values()))
    frames = frames_to_tensor(video, torch.device("cpu"))
    return not video.frames.flags.writeable and frames.data_ptr() == video.frames.ctypes.data


def measure_memory() -> dict[str, float]:
    base = spec.parse(MEMORY_SPEC)
    data = base.cells[0].config.data
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        videos = {data: simulate(data.balls, data.seed)}
        zero_copy = ray.get(_reads_shared_copy.remote(ray.put(videos)))
    finally:
        ray.shutdown()
    out: dict[str, float] = {
        "video MiB": data.balls.n_frames * data.balls.size * data.balls.size * 3 / 2**20,
        "trial frames alias the object store copy (1 = yes)": float(zero_copy),
    }
    # (label, Ray's CPUs = trials at a time, resources.fuse): 4 processes, or 4 trials fused
    # into one (`ssvae_core.fused`: one process, one torch runtime)
    for label, concurrent, fuse in (("1 at a time", 1, 1), ("4 at a time", 4, 1),
                                    ("4 fused in one trial", 1, 4)):  # fmt: skip
        sweep = dataclasses.replace(
            base,
            name=f"memory-{concurrent}-{fuse}",
            execution=dataclasses.replace(base.execution, max_concurrent=concurrent),
            resources=dataclasses.replace(base.resources, fuse=fuse),
        )
        ray.init(num_cpus=concurrent, include_dashboard=False, log_to_driver=False)
        try:
            with tempfile.TemporaryDirectory() as scratch, PeakMemory() as peak:
                _quiet_run(sweep, Path(scratch))
        finally:
            ray.shutdown()
        out[f"peak PSS, {label}, all MiB"] = peak.total_mib
        out[f"peak PSS, {label}, workers MiB"] = peak.workers_mib
    one = out["peak PSS, 1 at a time, all MiB"]
    out["ratio all, 4 at a time (target <= 1.5)"] = out["peak PSS, 4 at a time, all MiB"] / one
    out["ratio all, 4 fused"] = out["peak PSS, 4 fused in one trial, all MiB"] / one
    out["ratio workers, 4 at a time"] = (
        out["peak PSS, 4 at a time, workers MiB"] / out["peak PSS, 1 at a time, workers MiB"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, help="time this sweep file instead")
    parser.add_argument("--only", choices=("time", "memory"))
    args = parser.parse_args()
    results: dict[str, float] = {}
    if args.only in (None, "time"):
        timed = [spec.load(REPO / "sweeps" / "smoke.yaml"), spec.parse(MEDIUM_SPEC)]
        for sweep in [spec.load(args.spec)] if args.spec else timed:
            results |= measure_time(sweep)
    if args.only in (None, "memory"):
        results |= measure_memory()
    print()
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:10.2f}")


if __name__ == "__main__":
    main()
