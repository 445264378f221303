"""The GPU, measured: one trial at paper scale, resume on the GPU, trials packed per GPU.

Run on a GPU machine (``bench/gpu.sh``: nothing to install, under 10 minutes on one H200),
with the project's venv or a python3 that holds torch. Each section is budgeted; a section
that fails prints FAIL in its row and the others still run, keeping the rows it had. Each row
is printed (stderr, flushed) as it is measured, so a run cut short still shows what it got;
the last thing printed is a markdown table (docs/gpu.md says what each row means):

(a) ``fit`` at the ``paper`` preset: 3 epochs timed, then the 30 epochs of the paper run in
    full when they fit the budget (else extrapolated, and the row says so): pairs/s over the
    training epochs, median s per epoch, s for 30 epochs, peak CUDA memory (allocated and
    reserved) and the device memory outside torch's allocator (the CUDA context).
(b) resume on the device: 4 epochs uninterrupted against 2 epochs, stopped, and resumed from
    the checkpoint for 2 more (deterministic kernels for both); ok when the resumed run trained
    only the 2 epochs left and its losses and probe match within `RESUME_RTOL`.
(c) sweeps of `sweeps/paper.yaml`'s trial (``train.device: auto``, ``resources.gpu: 1/k``,
    `runner.run_sweep` with MLflow on sqlite) with k = 1, 4, 16, 32 trials at once on one GPU:
    aggregate pairs/s over the span in which they trained, against k = 1. Skipped (not a
    failure) where the `sweep` extra (Ray, Optuna, MLflow) is not installed, as on a lent
    GPU image.
(d) fused trials (`ssvae_core.fused`: K trials of one shape as one model, what
    ``resources.fuse`` runs) with K = 16 and 64: aggregate pairs/s of one epoch against one
    trial's epoch alone on the same device (`bench/fused.py`).

    bench/gpu.sh                            # on the GPU machine: the table for the README
    python bench/gpu.py --device cpu --quick   # every section at smoke size on the CPU,
                                               # (c) on one GPU declared to Ray (the packing)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fused import fused_pairs_per_s, pairs_per_epoch  # bench/fused.py, beside this script

from ssvae_core import loader
from ssvae_core.balls import Video, simulate
from ssvae_core.config import RunConfig
from ssvae_core.train import fit

PAPER_EPOCHS = 30
RESUME_RTOL = 1e-5  # relative; deterministic kernels make a resumed run repeat the same steps
SMOKE = {  # the smoke sweep's problem (sweeps/smoke.yaml)
    "data.n_frames": 60,
    "data.size": 32,
    "data.diameter": 6,
    "train.batch_size": 10,
}
GOAL_TRIAL_S = 5.0  # issue 13: a paper-scale trial in <= 5 s
GOAL_PACKED = (32, 10.0)  # >= 32 trials per GPU with aggregate throughput >= 10x one trial


@dataclass
class Row:
    measurement: str
    value: str
    goal: str = ""


@dataclass(frozen=True)
class Setup:
    device: str  # cuda | cpu
    quick: bool
    deadline: float  # time.monotonic() by which every section has ended

    @property
    def scale(self) -> str:
        return "smoke" if self.quick else "paper"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def config(self, epochs: int, **extra: Any) -> RunConfig:
        sets = {"train.epochs": epochs, "train.device": self.device, **extra}
        if self.quick:
            sets = {**SMOKE, **sets}
        return loader.load("paper", None, [f"{k}={v}" for k, v in sets.items()])


def _peak_memory_mib(device: str) -> tuple[str, float]:
    if device == "cuda":
        return (
            "peak CUDA memory MiB (max_memory_allocated)",
            torch.cuda.max_memory_allocated() / 2**20,
        )
    return "peak memory MiB (process peak RSS; no CUDA)", (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )


# -------------------------------------------------------------------- (a) one trial


def bench_fit(setup: Setup, video: Video) -> Iterator[Row]:
    """3 epochs timed; the whole paper run when it fits the budget."""
    where = f"fit {setup.scale}, {setup.device}"
    cfg = setup.config(3)
    tic = time.perf_counter()
    timed = fit(cfg, video=video)
    wall = time.perf_counter() - tic
    seconds = [row["epoch_seconds"] for row in timed.history[1:]]
    epoch_s, probe_s = seconds[1], max(0.0, seconds[2] - seconds[1])  # 1: warm-up, 3: probe
    probes = PAPER_EPOCHS // cfg.probe.every_epochs
    estimate = (wall - sum(seconds)) + PAPER_EPOCHS * epoch_s + probes * probe_s
    full_run_limit = 0.0 if setup.quick else min(150.0, setup.left() - 300.0)
    if estimate <= full_run_limit:
        if setup.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        cfg = setup.config(PAPER_EPOCHS)
        tic = time.perf_counter()
        run = fit(cfg, video=video)
        total, how = time.perf_counter() - tic, "measured"
        seconds = [row["epoch_seconds"] for row in run.history[1:]]
        epoch_s = statistics.median(seconds)
    else:
        total, how = estimate, "extrapolated from 3"
    pairs_per_s = len(seconds) * pairs_per_epoch(cfg) / sum(seconds)
    memory_name, memory = _peak_memory_mib(setup.device)
    yield Row(f"{where}: pairs/s (training epochs)", f"{pairs_per_s:.0f}")
    yield Row(f"{where}: s per epoch (median)", f"{epoch_s:.3f}")
    yield Row(
        f"{where}: s for {PAPER_EPOCHS} epochs ({how}; in a warm process)",
        f"{total:.1f}",
        f"<= {GOAL_TRIAL_S:g} at paper scale",
    )
    yield Row(f"{where}: {memory_name}", f"{memory:.0f}")
    if setup.device == "cuda":
        yield from cuda_memory_rows(where)


def cuda_memory_rows(where: str) -> Iterator[Row]:
    """What a trial holds on the GPU beyond its tensors, which `preflight.run_bytes` does not
    count: the blocks torch's caching allocator kept (``max_memory_reserved``), and the device
    memory in use outside that allocator (the CUDA context, cuBLAS and cuDNN), read as
    ``total - free - memory_reserved`` from ``mem_get_info``: every process on the GPU counts,
    so it is this process's own only where nothing else runs there (a lent machine)."""
    free, total = torch.cuda.mem_get_info()
    outside = (total - free - torch.cuda.memory_reserved()) / 2**20
    reserved = torch.cuda.max_memory_reserved() / 2**20
    yield Row(f"{where}: peak CUDA memory reserved MiB (max_memory_reserved)", f"{reserved:.0f}")
    yield Row(
        f"{where}: device MiB in use outside torch's allocator (CUDA context)", f"{outside:.0f}"
    )


# -------------------------------------------------------------------- (b) resume


class _Stop(Exception):
    """Raised from `report` after an epoch: the run is killed there, its checkpoint written."""


def _losses(history: list[dict[str, float]]) -> list[float]:
    return [row["loss"] for row in history[1:]]


def _max_rel_diff(a: list[float], b: list[float]) -> float:
    return max(
        (abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(a, b, strict=True)), default=0.0
    )


def bench_resume(setup: Setup, video: Video, epochs: int = 4, stop_after: int = 2) -> Iterator[Row]:
    """`epochs` uninterrupted against `stop_after`, stopped, then resumed to `epochs`."""
    name = f"resume {setup.scale}, {setup.device}: {stop_after} + {epochs - stop_after} epochs "
    name += f"vs {epochs} uninterrupted (rtol {RESUME_RTOL:g})"
    cfg = setup.config(epochs, **{"probe.every_epochs": 1})
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with tempfile.TemporaryDirectory() as whole, tempfile.TemporaryDirectory() as parts:
            reference = fit(cfg, checkpoint_dir=whole, video=video)

            def stop(row: dict[str, Any], _checkpoint_dir: str | None) -> None:
                if row["epoch"] == stop_after:
                    raise _Stop

            try:
                fit(cfg, report=stop, checkpoint_dir=parts, video=video)
                yield Row(name, "FAIL: the first part was not stopped")
                return
            except _Stop:
                pass
            trained: list[int] = []
            resumed = fit(
                cfg, report=lambda row, _: trained.append(int(row["epoch"])), checkpoint_dir=parts,
                video=video,
            )  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    epochs_seen = [int(row["epoch"]) for row in resumed.history]
    diff = _max_rel_diff(_losses(reference.history), _losses(resumed.history))
    diff = max(diff, _max_rel_diff([reference.probe_error_px], [resumed.probe_error_px]))
    problems = []
    if trained != list(range(stop_after + 1, epochs + 1)):
        problems.append(f"trained epochs {trained}, not only {stop_after + 1}..{epochs}")
    if epochs_seen != list(range(epochs + 1)):
        problems.append(f"history epochs {epochs_seen}")
    if resumed.status != "ok":
        problems.append(f"status {resumed.status}")
    if not diff <= RESUME_RTOL:
        problems.append(f"losses or probe differ from the uninterrupted run's by > {RESUME_RTOL:g}")
    verdict = "FAIL: " + "; ".join(problems) if problems else "ok"
    yield Row(name, f"{verdict} (max rel diff {diff:.2g})")


# -------------------------------------------------------------------- (c) packed sweeps

SWEEP = """\
name: {name}
base: {{preset: paper, train.device: auto, train.epochs: {epochs}{smoke}}}
grid: {{method: [gaussian], train.seed: [{seeds}]}}
resources: {{cpu: {cpu:g}, gpu: {gpu:g}}}
budget: {{time_budget_s: {budget:.0f}}}
max_failures: 0
"""


def _trial_walls(result_json: Path) -> list[tuple[int, float]]:
    """(epoch, wall-clock time) of each epoch a trial reported (Ray's ``result.json``).

    Ray stamps a result with whole seconds (``timestamp``) and the trial's own clock
    (``time_total_s``, float); each row bounds the trial's start from below, and the
    tightest bound puts every row on the wall clock to well under a second.
    """
    rows = [json.loads(line) for line in result_json.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if not row.get("final")]
    if not rows:  # stopped before its first report
        return []
    start = max(row["timestamp"] - row["time_total_s"] for row in rows)
    return [(int(row["epoch"]), start + row["time_total_s"]) for row in rows]


def packed_throughput(directory: Path, cfg: RunConfig) -> tuple[float, int, list[str]]:
    """Aggregate pairs/s of a sweep's trials: every pair trained, over the span from the
    first trial's epoch 0 to the last trial's last epoch; the trials; their devices."""
    begins, ends, pairs, devices = [], [], 0, []
    for result_json in sorted(directory.glob("grid/*/result.json")):
        walls = _trial_walls(result_json)
        if not walls:
            continue
        begins.append(walls[0][1])
        ends.append(walls[-1][1])
        pairs += walls[-1][0] * pairs_per_epoch(cfg)
        last = json.loads(result_json.read_text().splitlines()[-1])
        devices.append(str(last.get("device", "")))
    span = max(ends) - min(begins) if begins else math.nan
    return (pairs / span if span > 0 else math.nan), len(begins), devices


def bench_sweeps(setup: Setup, ks: tuple[int, ...], epochs: int) -> Iterator[Row]:
    """`sweeps/paper.yaml`'s trial, k at once on one GPU, for each k in `ks`; skipped where
    the sweep service's own packages are not installed (``ssvae sweep``'s check: a lent GPU
    image has none of Ray, Optuna and MLflow)."""
    from ssvae_core.sweep.cli import missing_extra

    if absent := missing_extra():
        yield Row("sweeps (c)", f"skipped: {absent}")
        return
    import ray

    from ssvae_core.sweep import runner, spec

    if setup.device == "cuda":
        torch.cuda.empty_cache()  # (a)/(b)'s cached blocks, not the trials'
        ray.init(include_dashboard=False, log_to_driver=False)
    else:  # no GPU here: one declared to Ray, so the packing itself runs
        ray.init(num_cpus=max(ks), num_gpus=1, include_dashboard=False, log_to_driver=False)
    alone = math.nan
    try:
        cpus, gpus = ray.cluster_resources().get("CPU", 1.0), ray.cluster_resources().get("GPU")
        if not gpus:
            yield Row("sweeps: Ray sees no GPU", "FAIL: ray.cluster_resources() has no GPU")
            return
        smoke = "".join(f", {k}: {v}" for k, v in SMOKE.items()) if setup.quick else ""
        with tempfile.TemporaryDirectory() as scratch:
            for done, k in enumerate(ks):
                cpu = min(1.0, math.floor(cpus / k * 100) / 100)  # k=32 on 16 cores: 0.5
                name = f"sweep {setup.scale} k={k} (gpu {1 / k:g}, cpu {cpu:g} each)"
                if setup.left() < 60:
                    yield Row(name, "skipped: the time budget is spent")
                    continue
                text = SWEEP.format(
                    name=f"gpu-k{k}", epochs=epochs, smoke=smoke, cpu=cpu, gpu=1 / k,
                    seeds=", ".join(map(str, range(k))),
                    budget=max(30.0, (setup.left() - 30) / (len(ks) - done)),  # a share each
                )  # fmt: skip
                sweep = spec.parse(text)
                uri = f"sqlite:///{Path(scratch) / 'mlflow.db'}"
                try:
                    result = runner.run_sweep(sweep, tracking_uri=uri, storage_path=scratch)
                    rate, n, devices = packed_throughput(result.directory, sweep.cells[0].config)
                    statuses = result.trials["status"].value_counts().to_dict()
                except runner.SweepInterrupted:  # the sweep took the SIGTERM: the run stops
                    raise KeyboardInterrupt from None
                except Exception as err:  # one k failing leaves the others to run
                    yield Row(name, f"FAIL: {type(err).__name__}: {err}"[:200])
                    continue
                want = "cuda" if setup.device == "cuda" else "cpu"
                on = sum(d == want for d in devices)
                note = "" if n == k and on == k else f" FAIL: {n} trials ran, {on} on {want}"
                if set(statuses) - {"ok", "stopped"}:
                    note += f" FAIL: trials {statuses}"
                elif statuses.get("stopped"):  # the sweep's share of the budget ran out
                    note += f" ({statuses['stopped']} stopped by the budget: over what ran)"
                note += "" if math.isfinite(rate) else " FAIL: no time span measured"
                yield Row(f"{name}: aggregate pairs/s, {on}/{k} on {want}", f"{rate:.0f}{note}")
                if k == 1:
                    alone = rate
                else:
                    goal = f">= {GOAL_PACKED[1]:g} at k >= {GOAL_PACKED[0]}"
                    yield Row(f"sweep k={k}: x one trial alone", f"{rate / alone:.2f}", goal)
    finally:
        ray.shutdown()


# -------------------------------------------------------------------- the table


def bench_fused(setup: Setup, video: Video, ks: tuple[int, ...]) -> Iterator[Row]:
    """(d): K trials of different seeds fused into one model (`ssvae_core.fused`), one epoch
    timed (best of 2 after a warm-up) against one trial's epoch alone (`bench/fused.py`).
    Each K on its own: one that fails (out of memory) leaves the smaller K's rows, and the
    larger K are then skipped; so is one that would not fit the time left (K/K' times the
    last one's seconds, and a minute)."""
    last: tuple[int, float] | None = None  # (K, seconds) of the last one measured
    failed: int | None = None
    for k in ks:
        name = f"fused trials K={k}"
        if failed is not None:
            yield Row(f"{name}: aggregate pairs/s", f"skipped: K={failed} failed")
            continue
        need = 60.0 + (last[1] * k / last[0] if last else 0.0)
        if setup.left() < need:
            left = f"skipped: {setup.left():.0f} s left, about {need:.0f} needed"
            yield Row(f"{name}: aggregate pairs/s", left)
            continue
        if setup.device == "cuda":
            torch.cuda.empty_cache()
        tic = time.monotonic()
        try:
            rates = fused_pairs_per_s(setup.config(1), video, k, rounds=2)
        except Exception as err:  # out of memory at a large K: the smaller K's rows stay
            yield Row(f"{name}: aggregate pairs/s", f"FAIL: {type(err).__name__}: {err}"[:200])
            failed = k
            continue
        last = (k, time.monotonic() - tic)
        yield Row(f"{name}: aggregate pairs/s", f"{rates['fused']:.0f}")
        goal = f">= {GOAL_PACKED[1]:g} at K >= {GOAL_PACKED[0]}"
        yield Row(f"fused K={k}: x one trial alone", f"{rates['fused'] / rates['alone']:.2f}", goal)


def markdown(rows: list[Row]) -> str:
    lines = ["| measurement | value | goal |", "|---|---:|---|"]
    lines += [f"| {r.measurement} | {r.value} | {r.goal} |" for r in rows]
    return "\n".join(lines)


def _section(name: str, run: Callable[[], Iterator[Row]], rows: list[Row]) -> None:
    """Append the rows of one section to `rows`, each printed (stderr, flushed) as it comes;
    one that fails keeps the rows it had and adds a FAIL row, and the others still run. A
    stop (SIGINT, or the SIGTERM of a `timeout`, see `main`) adds a CUT row and ends the run."""
    print(f"[gpu bench] {name} ...", file=sys.stderr, flush=True)
    try:
        for row in run():
            print(f"[gpu bench] {row.measurement}: {row.value}", file=sys.stderr, flush=True)
            rows.append(row)
    except KeyboardInterrupt:
        rows.append(Row(name, "CUT: stopped here (SIGINT or SIGTERM); later sections not run"))
        print(f"[gpu bench] {name}: {rows[-1].value}", file=sys.stderr, flush=True)
        raise
    except Exception as err:
        rows.append(Row(name, f"FAIL: {type(err).__name__}: {err}"[:200]))
        print(f"[gpu bench] {name}: {rows[-1].value}", file=sys.stderr, flush=True)


def _stop(signum: int, _frame: Any) -> None:
    """SIGTERM (a `timeout` running out) as Ctrl-C, so the table of what ran still prints."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="smoke size (for the CPU test)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="all sections (default 480)")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts; for (b)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False); "
            "run on a GPU machine, or --device cpu --quick to test the script",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    setup = Setup(args.device, args.quick, started + args.budget_s)
    cfg = setup.config(1)
    video = simulate(cfg.data.balls, cfg.data.seed)
    ks = (1, 4) if args.quick else (1, 4, 16, 32)
    sections: list[tuple[str, Callable[[], Iterator[Row]]]] = [
        ("fit", lambda: bench_fit(setup, video)),
        ("resume", lambda: bench_resume(setup, video)),
        ("sweeps", lambda: bench_sweeps(setup, ks, epochs=2 if args.quick else 5)),
        ("fused", lambda: bench_fused(setup, video, (16, 64))),
    ]
    rows: list[Row] = []
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        for name, run in sections:
            _section(name, run, rows)
    except KeyboardInterrupt:  # the CUT row says so (the run's, if between sections)
        if not rows or not rows[-1].value.startswith("CUT"):
            rows.append(Row("run", "CUT: stopped between sections (SIGINT or SIGTERM)"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"\n{where}, torch {torch.__version__}, {time.monotonic() - started:.0f} s in all\n")
    print(markdown(rows))
    return 1 if any(r.value.startswith(("FAIL", "CUT")) or " FAIL" in r.value for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
