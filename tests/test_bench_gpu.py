"""`bench/gpu.py --device cpu --quick`: every section of the GPU benchmark at smoke size, on
the CPU, with section (c)'s sweeps packed on one GPU declared to Ray; the table's rows exist,
their numbers are finite, the resume check passes."""

from __future__ import annotations

import importlib
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def table(stdout: str) -> dict[str, list[str]]:
    """The markdown table printed last: measurement -> [value, goal]."""
    lines = stdout.rstrip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("| measurement |"))
    rows = [line.strip("|").split("|") for line in lines[start + 2 :]]
    assert all(len(row) == 3 for row in rows), rows
    return {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows}


def number(value: str) -> float:
    found = re.match(r"-?[0-9.]+(e-?[0-9]+)?", value)
    assert found, f"{value!r} is not a number"
    return float(found.group(0))


@pytest.mark.slow
def test_gpu_bench_quick_on_cpu_prints_every_row_finite(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    pytest.importorskip("mlflow")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--quick"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = table(done.stdout)
    expected_numbers = [
        "fit smoke, cpu: pairs/s (training epochs)",
        "fit smoke, cpu: s per epoch (median)",
        "fit smoke, cpu: s for 30 epochs (extrapolated from 3; in a warm process)",
        "fit smoke, cpu: peak memory MiB (process peak RSS; no CUDA)",
        "sweep smoke k=1 (gpu 1, cpu 1 each): aggregate pairs/s, 1/1 on cpu",
        "sweep smoke k=4 (gpu 0.25, cpu 1 each): aggregate pairs/s, 4/4 on cpu",
        "sweep k=4: x one trial alone",
        "fused trials K=16: aggregate pairs/s",
        "fused K=16: x one trial alone",
        "fused trials K=64: aggregate pairs/s",
        "fused K=64: x one trial alone",
    ]
    for name in expected_numbers:
        assert name in rows, f"no row {name!r} in {list(rows)}"
        value = number(rows[name][0])
        assert math.isfinite(value) and value > 0, (name, rows[name])
    [resume] = [name for name in rows if name.startswith("resume smoke, cpu: 2 + 2 epochs")]
    assert rows[resume][0].startswith("ok"), rows[resume]
    assert not any("FAIL" in value for value, _ in rows.values())
    # the last thing printed is the table
    assert done.stdout.rstrip().splitlines()[-1].startswith("| fused K=64: x one trial alone")


@pytest.fixture
def gpu_bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """bench/gpu.py as a module (with bench/ on the path, for its `fused` import)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return importlib.import_module("gpu")


def test_sweeps_are_skipped_not_failed_where_ray_or_mlflow_is_missing(
    gpu_bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lent GPU image has torch but neither Ray nor MLflow: (c) says so, the rest runs."""
    from ssvae_core.sweep import cli

    monkeypatch.setattr(cli, "SWEEP_EXTRA", ("ray", "no_such_package_ssvae"))
    setup = gpu_bench.Setup("cpu", quick=True, deadline=time.monotonic() + 60)
    got: list[Any] = []
    gpu_bench._section("sweeps", lambda: gpu_bench.bench_sweeps(setup, (1,), 1), got)
    [row] = got
    assert row.value.startswith("skipped: this needs the 'sweep' extra (no_such_package_ssvae not")
    assert "FAIL" not in row.value


def test_a_section_that_fails_keeps_the_rows_it_had(gpu_bench: Any) -> None:
    def rows() -> Iterator[Any]:
        yield gpu_bench.Row("first", "1")
        raise RuntimeError("CUDA out of memory")

    got: list[Any] = []
    gpu_bench._section("fused", rows, got)
    assert [(r.measurement, r.value) for r in got] == [
        ("first", "1"),
        ("fused", "FAIL: RuntimeError: CUDA out of memory"),
    ]


def test_a_fused_k_that_fails_leaves_the_smaller_ks_rows(
    gpu_bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake(_cfg: Any, _video: Any, k: int, rounds: int) -> dict[str, float]:
        if k > 16:
            raise RuntimeError("CUDA out of memory")
        return {"fused": 100.0 * k, "alone": 100.0}

    monkeypatch.setattr(gpu_bench, "fused_pairs_per_s", fake)
    setup = gpu_bench.Setup("cpu", quick=True, deadline=time.monotonic() + 600)
    rows = [(r.measurement, r.value) for r in gpu_bench.bench_fused(setup, None, (16, 64, 128))]
    assert rows[:2] == [
        ("fused trials K=16: aggregate pairs/s", "1600"),
        ("fused K=16: x one trial alone", "16.00"),
    ]
    assert rows[2] == (
        "fused trials K=64: aggregate pairs/s",
        "FAIL: RuntimeError: CUDA out of memory",
    )
    assert rows[3] == ("fused trials K=128: aggregate pairs/s", "skipped: K=64 failed")
    # and one that would not fit the time left is skipped, not run
    setup = gpu_bench.Setup("cpu", quick=True, deadline=time.monotonic() + 30)
    [row] = gpu_bench.bench_fused(setup, None, (16,))
    assert row.value.startswith("skipped: ") and "FAIL" not in row.value


def test_the_cuda_memory_rows_separate_the_allocator_from_the_context(
    gpu_bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an 80 GiB device with 70 GiB free, 6 GiB reserved by torch (8 at its peak): the
    context row reads the 4 GiB outside the allocator, not the 10 in use."""
    import torch

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (70 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: 6 * gib)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: 8 * gib)
    rows = [(r.measurement, r.value) for r in gpu_bench.cuda_memory_rows("fit paper, cuda")]
    assert rows == [
        ("fit paper, cuda: peak CUDA memory reserved MiB (max_memory_reserved)", "8192"),
        ("fit paper, cuda: device MiB in use outside torch's allocator (CUDA context)", "4096"),
    ]


def test_a_timeout_s_sigterm_still_prints_the_table_of_what_ran(
    gpu_bench: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`timeout 570 bench/gpu.sh` ends a slow run with SIGTERM: the rows measured so far are
    printed as the table, the section it stopped in says CUT, no later section starts."""
    import signal

    def fit_then_terminated(*_: Any) -> Iterator[Any]:
        yield gpu_bench.Row("fit smoke, cpu: pairs/s", "123")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first
        yield gpu_bench.Row("never", "0")

    def later(*_: Any) -> Iterator[Any]:
        raise AssertionError("a section after the stop ran")

    monkeypatch.setattr(gpu_bench, "simulate", lambda *_: None)
    monkeypatch.setattr(gpu_bench, "bench_fit", fit_then_terminated)
    for name in ("bench_resume", "bench_sweeps", "bench_fused"):
        monkeypatch.setattr(gpu_bench, name, later)
    before = signal.getsignal(signal.SIGTERM)
    assert gpu_bench.main(["--device", "cpu", "--quick"]) == 1
    rows = table(capsys.readouterr().out)
    assert rows["fit smoke, cpu: pairs/s"][0] == "123" and "never" not in rows
    assert rows["fit"][0].startswith("CUT: stopped here") and len(rows) == 2
    assert signal.getsignal(signal.SIGTERM) is before  # pytest's own handler back


def test_a_sigterm_the_sweep_took_stops_the_run_not_only_that_k(
    gpu_bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep turns SIGTERM into `SweepInterrupted`: it was a FAIL row for one k, and the
    next k and the fused section ran on past the `timeout`."""
    pytest.importorskip("ray")
    pytest.importorskip("mlflow")
    from ssvae_core.sweep import runner

    def interrupted(*_: Any, **__: Any) -> Any:
        raise runner.SweepInterrupted("sweep gpu-k1 interrupted")

    monkeypatch.setattr(runner, "run_sweep", interrupted)
    setup = gpu_bench.Setup("cpu", quick=True, deadline=time.monotonic() + 600)
    rows: list[Any] = []
    with pytest.raises(KeyboardInterrupt):
        gpu_bench._section("sweeps", lambda: gpu_bench.bench_sweeps(setup, (1, 4), 1), rows)
    assert [r.value for r in rows] == [
        "CUT: stopped here (SIGINT or SIGTERM); later sections not run"
    ]
