"""The failure matrix: hostile and careless input, each case a real ``ssvae`` process.

Every case runs the command in a fresh working directory and checks its exit status, that
the message names what is wrong, that no traceback reaches the user, and that it answers
within its time limit (nothing hangs). ``python tests/test_hostile.py`` runs the matrix and
prints the table of docs/reliability.md (the README shows a part of it).

Cases that need a read-only or a full filesystem run inside their own mount namespace
(``unshare -m``, root); where that is not allowed they are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = (
    "base: {preset: small, data.n_frames: 60, data.size: 32, data.diameter: 6, "
    "train.epochs: 1, train.batch_size: 10, train.device: cpu}\n"
)
TRAIN_TINY = ["--set", "data.n_frames=60", "--set", "data.size=32", "--set", "data.diameter=6",
              "--set", "train.batch_size=10", "--set", "train.epochs=1", "--quiet"]  # fmt: skip
BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)  # 10^9 values once expanded


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]  # after `ssvae`; {tmp} is the working directory
    exit: int
    says: str  # a substring of stderr (or stdout, for a result that must not be lost)
    files: dict[str, str] = field(default_factory=dict)  # written in the working dir first
    mount: str | None = None  # "ro": the working dir read-only; "ro-sub": its ro/ folder;
    # "full": a full disk at out/
    limit_s: float = 30.0
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)  # set for the command


HUNDRED = "[" + ", ".join(str(i) for i in range(1, 101)) + "]"


def _sweep(body: str) -> dict[str, str]:
    return {"s.yaml": f"name: s\n{TINY}{body}"}


def _foreign_database(tmp: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp / "notes.db") as db:
        db.execute("create table notes(id int)")


def _npy(tmp: Path) -> None:
    import numpy as np

    np.save(tmp / "a.npy", np.zeros((3, 3)))  # np.load gives an array, not an NpzFile


def _named_pipe(tmp: Path) -> None:
    os.mkfifo(tmp / "p.yaml")  # open() for reading waits until something opens it to write


def _checkpoint_of_another_config(tmp: Path, *more: str) -> None:
    argv = [sys.executable, "-m", "ssvae_core.cli", "train", *TRAIN_TINY, *more,
            "--checkpoint-dir", "ck"]  # fmt: skip
    subprocess.run(argv, cwd=tmp, check=True, capture_output=True, timeout=300)


def _python(tmp: Path, code: str) -> None:
    """Run `code` in a fresh python in `tmp` (torch's pickles written as a stranger would)."""
    subprocess.run([sys.executable, "-c", code], cwd=tmp, check=True, timeout=120)


def _damaged_adam_checkpoint(tmp: Path) -> None:
    """A checkpoint of this config whose Adam state lost a moment (a KeyError mid-training)."""
    _checkpoint_of_another_config(tmp, "--set", "train.optimizer=adam")
    _python(
        tmp,
        "import torch\n"
        "state = torch.load('ck/state.pt', weights_only=True)\n"
        "del state['optimizer']['state'][0]['exp_avg']\n"
        "torch.save(state, 'ck/state.pt')\n",
    )


def _tampered_checkpoint(tmp: Path) -> None:
    (tmp / "ck").mkdir()
    _python(
        tmp,
        "import os, torch\n"
        "class P:\n"
        "    def __reduce__(self): return (os.system, ('touch pwned',))\n"
        "torch.save({'config': {}, 'x': P()}, 'ck/state.pt')\n",
    )


def _pipe_in_out(tmp: Path) -> None:
    (tmp / "out").mkdir()
    os.mkfifo(tmp / "out" / "metrics.json")  # opening it to write waits for a reader


def _dangling_in_out(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "fig1b.png").symlink_to(tmp / "nowhere" / "fig.png")


def _open_tuner_state(tmp: Path) -> None:
    """A stopped sweep whose Ray state (``tuner.pkl``) anyone may rewrite, and someone did:
    unpickled, it would run ``touch pwned``."""
    state = tmp / "runs" / "sweeps" / "s" / "grid" / "tuner.pkl"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")
    state.chmod(0o666)


def _cut_tuner_state(tmp: Path) -> None:
    """A stopped sweep whose Ray state (``tuner.pkl``, ours) was cut short, beside its
    trials' state (without which the Tuner run simply starts again)."""
    state = tmp / "runs" / "sweeps" / "s" / "grid" / "tuner.pkl"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"\x80\x04\x95")
    (state.parent / "experiment_state-2026-12-07_00-00-00.json").write_text("{}")


def _npz_declaring_7_tib(tmp: Path) -> None:
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 1)}
    )
    with zipfile.ZipFile(tmp / "big.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(64))


def _empty_trials(tmp: Path) -> None:
    (tmp / "runs" / "sweeps" / "s").mkdir(parents=True)
    (tmp / "runs" / "sweeps" / "s" / "trials.csv").write_text("")


CASES = [
    # ---- hangs and lost work
    Case("a trial no node can hold (resources.gpu: 2)", ["sweep", "s.yaml"], 2,
         "resources.gpu: each trial asks for 2 GPU", _sweep("resources: {gpu: 2}\n"), limit_s=90),
    Case("a trial no node can hold (resources.cpu: 1000)", ["sweep", "s.yaml"], 2,
         "resources.cpu: each trial asks for 1000 CPU", _sweep("resources: {cpu: 1000}\n"),
         limit_s=90),
    Case("an unreachable --address", ["sweep", "s.yaml", "--address", "127.0.0.1:9"], 3,
         "--address 127.0.0.1:9: nothing answers", _sweep("")),
    Case("an unreachable $RAY_ADDRESS (Ray retried it without end)", ["sweep", "s.yaml"], 3,
         "$RAY_ADDRESS=127.0.0.1:9: nothing answers", _sweep(""),
         env={"RAY_ADDRESS": "127.0.0.1:9"}),
    Case("--address with a port that is no port", ["sweep", "s.yaml", "--address", "h:\u00b2"],
         2, "the port in 'h:\u00b2' is not a number in 1-65535", _sweep("")),
    Case("$TMPDIR is a file (Ray's session folder goes there)", ["sweep", "s.yaml"], 2,
         "$TMPDIR: cannot write to afile/ray", {**_sweep(""), "afile": "x"},
         env={"TMPDIR": "afile"}),
    Case("--tracking-uri naming another program's SQLite database",
         ["sweep", "s.yaml", "--tracking-uri", "sqlite:///notes.db"], 2,
         "notes.db is a SQLite database without MLflow's tables", _sweep(""),
         setup=_foreign_database),
    Case("ssvae nightly of a searched spec (trained it all, then a traceback)",
         ["nightly", "s.yaml"], 2, "search: a nightly pairs each grid cell and seed",
         _sweep("search: {num_samples: 2, space: {train.lr: {dist: loguniform, low: 0.001, "
                "high: 0.1}}}\n")),
    Case("a YAML alias bomb under a valid key (sweep)", ["sweep", "s.yaml"], 2,
         "holds more than 100000 values", {"s.yaml": f"name: s\n{BOMB}"}),
    Case("a YAML alias bomb in --config", ["train", "--config", "c.yaml"], 2,
         "holds more than 100000 values", {"c.yaml": BOMB}),
    Case("a 10^6-cell grid with budget.max_trials: 100", ["sweep", "s.yaml"], 2,
         "budget.max_trials: the sweep has 1000000 trials",
         _sweep("grid: {train.seed: [" + ", ".join(map(str, range(1000))) + "], "
                "train.lr: [" + ", ".join(f"{0.001 + i * 1e-6:.6f}" for i in range(1000))
                + "]}\nbudget: {max_trials: 100}\n"), limit_s=15),
    Case("--out is an existing file", ["train", *TRAIN_TINY, "--out", "f"], 2,
         "--out: f is a file", {"f": "x"}),
    Case("--out on a read-only filesystem", ["train", *TRAIN_TINY, "--out", "out"], 2,
         "--out: cannot write to out", mount="ro"),
    Case("--out on a full filesystem: the result still printed", ["train", *TRAIN_TINY,
         "--out", "out", "--json"], 3, '"probe_error_px"', mount="full", limit_s=120),
    Case("train.device=cuda without CUDA (train)", ["train", "--set", "train.device=cuda"], 2,
         "train.device: cuda, but torch sees no CUDA device"),
    Case("train.device=cuda without a GPU share (sweep)", ["sweep", "s.yaml"], 2,
         "train.device: cuda in grid cell", {"s.yaml": f"name: s\n{TINY}".replace(
             "train.device: cpu", "train.device: cuda")}),
    # ---- errors that name the key or the path
    Case("--config holding a list", ["train", "--config", "c.yaml"], 2,
         "c.yaml: expected a mapping of config sections", {"c.yaml": "[1, 2]\n"}),
    Case("--config holding a scalar", ["train", "--config", "c.yaml"], 2,
         "c.yaml: expected a mapping of config sections", {"c.yaml": "3\n"}),
    Case("a directory as --config", ["train", "--config", "."], 2, ".: is a directory"),
    Case("a directory as the sweep file", ["sweep", "."], 2, ".: is a directory", limit_s=5),
    Case("a missing sweep file", ["sweep", "nope.yaml"], 2, "nope.yaml: no such sweep file",
         limit_s=5),
    Case("a YAML syntax error names the file", ["sweep", "s.yaml"], 2,
         "s.yaml: not valid YAML: line 2, column 22",
         {"s.yaml": "name: s\ngrid: {train.lr: [0.1}\n"}, limit_s=5),
    Case("a Python tag in YAML", ["sweep", "s.yaml"], 2, "not valid YAML",
         {"s.yaml": "name: !!python/object/apply:os.system ['touch pwned']\n"}, limit_s=5),
    Case("a file as --checkpoint-dir", ["train", *TRAIN_TINY, "--checkpoint-dir", "f"], 2,
         "--checkpoint-dir: f is a file", {"f": "x"}),
    Case("a file as --storage-path", ["sweep", "s.yaml", "--storage-path", "f"], 2,
         "--storage-path:", {**_sweep(""), "f": "x"}),
    Case("ssvae report on an empty trials.csv", ["report", "s.yaml"], 2,
         "trials.csv: not a trials table", _sweep(""), setup=_empty_trials),
    Case("--preview x.xyz", ["data", "--preview", "x.xyz"], 2, "--preview: x.xyz is not an image"),
    Case("train.lr=.inf", ["train", "--set", "train.lr=.inf"], 2, "train.lr: expected finite"),
    Case("train.lr=1e308", ["train", "--set", "train.lr=1e308"], 2, "train.lr: must be in (0, 10]"),
    Case("coupling.lengthscale=.inf", ["train", "--set", "coupling.lengthscale=.inf"], 2,
         "coupling.lengthscale: expected finite"),
    Case("encoder.sigma=.inf", ["train", "--set", "encoder.stochastic=true", "--set",
         "encoder.sigma=.inf"], 2, "encoder.sigma: expected finite"),
    Case("coupling.temperature=.inf", ["train", "--set", "coupling.kind=cosine", "--set",
         "coupling.temperature=.inf"], 2, "coupling.temperature: expected finite"),
    Case("train.seed=1180591620717411303424 (2^70)", ["train", "--set", f"train.seed={2**70}"], 2,
         "train.seed: must be in [0, 2**63 - 1]"),
    Case("fig1c --seeds 99999999999999999999", ["fig1c", "--seeds", "99999999999999999999"], 2,
         "train.seed: must be in [0, 2**63 - 1]"),
    Case("data.n_frames=10^9", ["train", "--set", "data.n_frames=1000000000"], 2,
         "data.n_frames: the run needs about"),
    Case("a sweep's video beyond this machine (data.n_frames: 10^9)", ["sweep", "s.yaml"], 2,
         "data.n_frames: the sweep needs about", {"s.yaml": f"name: s\n{TINY}".replace(
             "data.n_frames: 60", "data.n_frames: 1000000000")}),
    Case("mi-bench --from-csv an empty file", ["mi-bench", "--from-csv", "e.csv"], 2,
         "--from-csv: e.csv: not a readable CSV", {"e.csv": ""}),
    Case("mi-bench --figure bias.xyz: refused before hours of training",
         ["mi-bench", "--figure", "bias.xyz"], 2, "--figure: bias.xyz is not an image file"),
    Case("mi-bench --mis nan", ["mi-bench", "--mis", "2,nan"], 2, "--mis: expected finite"),
    Case("mi-bench --mis 400 (beyond float64): refused before training",
         ["mi-bench", "--mis", "400"], 2, "--mis: 400 for task gaussian: 400 nats over 20"),
    Case("mi-bench --files an .npy", ["mi-bench", "--tasks", "none", "--files", "a.npy"], 2,
         "a.npy: one array (.npy?), not an .npz", setup=_npy),
    Case("mi-bench --from-csv rows.csv --out rows.csv (would overwrite the rows)",
         ["mi-bench", "--from-csv", "r.csv", "--out", "r.csv"], 2,
         "--out: r.csv is also the --from-csv file", {"r.csv": "x\n"}),
    Case("a key twice in a sweep file (grid: twice)", ["sweep", "s.yaml"], 2,
         "'grid' is there twice", _sweep("grid: {train.seed: [0]}\ngrid: {train.lr: [0.1]}\n")),
    Case("a section and a dotted key under it (train: 5, train.lr: 0.1)",
         ["train", "--config", "c.yaml"], 2, "train: expected a mapping, got 5",
         {"c.yaml": "train: 5\ntrain.lr: 0.1\n"}),
    Case("a mapping that holds itself through an alias", ["train", "--set",
         "train=&t {lr: 0.1, x: *t}"], 2, "train.x: holds itself"),
    Case("train.epochs=010 (YAML 1.1 octal: 8)", ["train", "--set", "train.epochs=010"], 2,
         "train.epochs: expected int, got '010'"),
    Case("--out ''", ["train", "--out", ""], 2, "argument --out: expected a path, got an empty"),
    Case("nightly --notify file:///etc/passwd", ["nightly", "s.yaml", "--notify",
         "file:///etc/passwd"], 2, "--notify: expected an http:// or https:// URL", _sweep("")),
    Case("ssvae report --out below a file", ["report", "s.yaml", "--out", "f/out"], 2,
         "--out: cannot write to f/out", {**_sweep(""), "f": "",
         "runs/sweeps/s/trials.csv": "train.seed,status,probe_error_px\n0,ok,1.0\n"}),
    Case("ssvae report on a table without the study's column", ["report", "s.yaml"], 2,
         "trials.csv: no column probe_error_px, which the 'fig1c' report draws",
         {**_sweep(""), "runs/sweeps/s/trials.csv": "train.seed,status\n0,ok\n"}),
    Case("--tracking-uri bogus://x", ["sweep", "s.yaml", "--tracking-uri", "bogus://x"], 2,
         "--tracking-uri: no MLflow store for bogus://", _sweep(""), limit_s=15),
    Case("--config /dev/zero (a file that never ends)", ["train", "--config", "/dev/zero"], 2,
         "/dev/zero: larger than 1000000 bytes", limit_s=10),
    Case("the sweep file /dev/zero", ["sweep", "/dev/zero"], 2,
         "/dev/zero: larger than 1000000 bytes", limit_s=10),
    Case("mi-bench --from-csv /dev/zero", ["mi-bench", "--from-csv", "/dev/zero"], 2,
         "--from-csv: /dev/zero: larger than", limit_s=10),
    Case("--config a named pipe nobody writes to", ["train", "--config", "p.yaml"], 2,
         "p.yaml: a pipe nothing was written to within 5 s", limit_s=10, setup=_named_pipe),
    Case("the sweep file a named pipe nobody writes to", ["sweep", "p.yaml"], 2,
         "p.yaml: a pipe nothing was written to within 5 s", limit_s=10, setup=_named_pipe),
    Case("resources.cpu: 0.00001 (finer than Ray schedules)", ["sweep", "s.yaml"], 2,
         "resources.cpu: must be 0 or >= 0.0001", _sweep("resources: {cpu: 0.00001}\n")),
    Case("data.size=10^5", ["train", "--set", "data.size=100000"], 2,
         "data.size: the run needs about"),
    Case("coupling.hidden=10^7 (the critic's weights)", ["train", "--set",
         "coupling.kind=concat_mlp", "--set", "coupling.hidden=10000000"], 2,
         "coupling.hidden: the run needs about"),
    Case("encoder.hidden=10^9", ["train", "--set", "encoder.kind=mlp", "--set",
         "encoder.hidden=1000000000"], 2, "encoder.hidden: the run needs about"),
    Case("a read-only working directory (sweep)", ["sweep", "s.yaml"], 2,
         "--storage-path: cannot write to", _sweep(""), mount="ro", limit_s=60),
    Case("a read-only folder for the sqlite store", ["sweep", "s.yaml",
         "--tracking-uri", "sqlite:///ro/mlflow.db"], 2,
         "is not a writable folder", {**_sweep(""), "ro/.keep": ""}, mount="ro-sub",
         limit_s=60),
    Case("experiment: ''", ["sweep", "s.yaml"], 2, "experiment: expected a non-empty",
         _sweep("experiment: ''\n")),
    Case("--sync on a name that never ran", ["sweep", "s.yaml", "--sync"], 2,
         "--sync: no sweep has run in", _sweep("")),
    Case("a tampered checkpoint", ["train", *TRAIN_TINY, "--checkpoint-dir", "ck"], 2,
         "not a valid ssvae checkpoint", setup=_tampered_checkpoint),
    Case("a checkpoint of another config", ["train", *TRAIN_TINY, "--checkpoint-dir", "ck",
         "--set", "train.lr=0.02"], 2, "train.lr: 0.005 in the checkpoint, 0.02 now",
         setup=_checkpoint_of_another_config),
    Case("a checkpoint whose Adam state lost a moment", ["train", *TRAIN_TINY,
         "--set", "train.optimizer=adam", "--set", "train.epochs=2", "--checkpoint-dir", "ck"],
         2, "ck/state.pt: not a valid ssvae checkpoint (optimizer.state.0.exp_avg: missing",
         setup=_damaged_adam_checkpoint, limit_s=60),
    # ---- containment
    Case("--name ../../escape", ["sweep", "s.yaml", "--name", "../../escape"], 2,
         "--name: expected 1-100 letters", _sweep("")),
    Case("--name /abs/path", ["sweep", "s.yaml", "--name", "/abs/path"], 2,
         "--name: expected 1-100 letters", _sweep("")),
    Case("a spec name: ..", ["sweep", "s.yaml"], 2, "name: expected 1-100 letters",
         {"s.yaml": f"name: ..\n{TINY}"}),
    Case("nightly history ../../etc", ["nightly", "history", "../../etc"], 2,
         "SPEC_NAME: expected 1-100 letters"),
    # ---- values that were silently misread, and files that made a command wait or fail late
    Case("a --config section as text, then --set into it", ["train", "--config", "c.yaml",
         "--set", "train.epochs=1"], 2, "train: expected a mapping, got 'lr=0.1'",
         {"c.yaml": "train: lr=0.1\n"}),
    Case("an int of 5000 digits", ["train", "--set", "train.epochs=" + "1" * 5000], 2,
         "train.epochs: expected int"),
    Case("a path name over 255 bytes", ["train", "--out", "a" * 256], 2,
         "a name in the path is 256 bytes long"),
    Case("a named pipe at out/metrics.json: refused before the training", ["train",
         *TRAIN_TINY, "--out", "out", "--json"], 2, "out/metrics.json is a named pipe",
         setup=_pipe_in_out, limit_s=60),
    Case("a link to nothing at out/fig1b.png (its folders would be made)", ["train",
         *TRAIN_TINY, "--out", "out"], 2, "out/fig1b.png is a symbolic link to nothing",
         setup=_dangling_in_out),
    Case("resuming with fewer epochs than the checkpoint holds", ["train", *TRAIN_TINY,
         "--checkpoint-dir", "ck", "--set", "train.epochs=0"], 2,
         "train.epochs: 0, but the checkpoint in ck is after epoch 1",
         setup=_checkpoint_of_another_config, limit_s=60),
    Case("fig1c --set train.seed=5 (--seeds sets it)", ["fig1c", "--set", "train.seed=5"], 2,
         "train.seed: ssvae fig1c sets it"),
    Case("nightly --set on a grid axis", ["nightly", "s.yaml", "--set", "train.seed=5"], 2,
         "--set train.seed: the sweep varies it", _sweep("grid: {train.seed: [0, 1]}\n")),
    Case("a grid of 10^10 cells (each cell was walked before the count)", ["sweep", "s.yaml",
         "--dry-run"], 2, "grid: 10000000000 cells, more than", _sweep("grid: {" + ", ".join(
             f"{key}: {HUNDRED}" for key in ("train.seed", "data.seed", "train.epochs",
                                            "probe.every_epochs", "train.batch_size")) + "}\n"),
         limit_s=15),
    Case("nightly.resamples: 10^12", ["sweep", "s.yaml"], 2, "nightly.resamples: must be in",
         _sweep("nightly: {resamples: 1000000000000}\n")),
    Case("sweep --resume with a damaged sweep.json", ["sweep", "s.yaml", "--resume"], 2,
         "sweep.json is damaged", {**_sweep(""), "runs/sweeps/s/sweep.yaml": f"name: s\n{TINY}",
         "runs/sweeps/s/sweep.json": "{not json"}),
    Case("sweep --resume with a Ray state others may write (a pickle)", ["sweep", "s.yaml",
         "--resume"], 2, "tuner.pkl is writable by others (mode -rw-rw-rw-)", {**_sweep(""),
         "runs/sweeps/s/sweep.yaml": f"name: s\n{TINY}"}, setup=_open_tuner_state),
    Case("sweep --resume with its Ray state cut short", ["sweep", "s.yaml", "--resume"], 2,
         "Ray's state in", {**_sweep(""), "runs/sweeps/s/sweep.yaml": f"name: s\n{TINY}"},
         setup=_cut_tuner_state, limit_s=60),
    Case("sweep --storage-path on a full disk", ["sweep", "s.yaml", "--storage-path", "out"], 3,
         "No space left on device (storage path", _sweep(""), mount="full", limit_s=60),
    Case("ssvae report on 'abc' as a probe error", ["report", "s.yaml"], 2,
         "row 1: probe_error_px holds 'abc', not a number",
         {**_sweep(""), "runs/sweeps/s/trials.csv": "train.seed,status,probe_error_px\n"
          "0,ok,abc\n"}),
    Case("mi-bench --mis 2,2 (a case twice)", ["mi-bench", "--mis", "2,2"], 2,
         "--mis: 2.0 given twice"),
    Case("an .npz whose header declares 7 TiB", ["mi-bench", "--tasks", "none", "--files",
         "big.npz"], 2, "big.npz: its arrays declare more", setup=_npz_declaring_7_tib),
    Case("nightly --notify with a space (a traceback after the night)", ["nightly", "s.yaml",
         "--notify", "http://127.0.0.1:9/a b"], 2, "--notify: a space or control character",
         _sweep("")),
    Case("ssvae report on a seed the grid never ran", ["report", "s.yaml"], 2,
         "row 1: train.seed holds 7, not a value of the grid (0)",
         {**_sweep("grid: {train.seed: [0]}\n"),
          "runs/sweeps/s/trials.csv": "train.seed,status,probe_error_px\n7,ok,1.0\n"}),
    Case("a sweep whose folder is a file", ["sweep", "s.yaml"], 2,
         "is a file, not a folder", {**_sweep(""), "runs/sweeps/s": "x"}),
    Case("mi-bench --seeds 10^20 (a traceback, or a 36 GB tuple at 10^9)", ["mi-bench",
         "--seeds", "100000000000000000000"], 2, "--seeds: must be in [1, 1000]"),
    Case("mi-bench --files of a text file (numpy's advice to allow pickles)", ["mi-bench",
         "--tasks", "none", "--files", "t.npz"], 2, "t.npz: not an .npz", {"t.npz": "hello"}),
]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    exit: int
    seconds: float
    out: str
    err: str


def _mount_namespace_ok() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


def run_case(case: Case, tmp: Path) -> Outcome:
    """Run `case` in the working directory `tmp` (prepared here)."""
    for name, text in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    if case.setup is not None:
        case.setup(tmp)
    command = [sys.executable, "-m", "ssvae_core.cli", *case.argv]
    if case.mount in ("ro", "ro-sub"):
        folder = tmp if case.mount == "ro" else tmp / "ro"
        mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"
        command = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
    elif case.mount == "full":
        out = tmp / "out"
        out.mkdir()
        fill = f"mount -t tmpfs -o size=16k tmpfs {out} && cat /dev/zero > {out}/fill 2>/dev/null"
        command = ["unshare", "-m", "sh", "-c", f'{fill}; exec "$@"', "sh", *command]
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env |= case.env
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, env=env,
                              timeout=case.limit_s + 60)  # fmt: skip
    except subprocess.TimeoutExpired as err:
        return Outcome(-1, time.monotonic() - started, "", f"timed out: {err}")
    return Outcome(done.returncode, time.monotonic() - started, done.stdout, done.stderr)


def handled(case: Case, outcome: Outcome) -> list[str]:
    """What is wrong with how the case was handled (empty: handled)."""
    problems = []
    if outcome.exit != case.exit:
        problems.append(f"exit {outcome.exit}, expected {case.exit}")
    if case.says not in outcome.err + outcome.out:
        problems.append(f"no {case.says!r} in the output")
    if "Traceback" in outcome.err:
        problems.append("a traceback")
    if outcome.seconds > case.limit_s:
        problems.append(f"{outcome.seconds:.0f} s, over {case.limit_s:.0f} s")
    return problems


def _needs(case: Case) -> str | None:
    if case.mount and not _mount_namespace_ok():
        return "needs root and `unshare -m` for a read-only or full filesystem"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_handled(case: Case, tmp_path: Path) -> None:
    if (reason := _needs(case)) is not None:
        pytest.skip(reason)
    outcome = run_case(case, tmp_path)
    assert handled(case, outcome) == [], (outcome.exit, outcome.err[-2000:])
    assert not (tmp_path / "pwned").exists()  # no file the product read ran code


def main() -> None:
    """Run the whole matrix; print the README's table (a markdown row per case)."""
    import tempfile

    rows, ok = [], 0
    for case in CASES:
        reason = _needs(case)
        if reason is not None:
            rows.append(f"| {case.name} | skipped: {reason} | - | - |")
            continue
        with tempfile.TemporaryDirectory(prefix="ssvae-hostile-") as folder:
            outcome = run_case(case, Path(folder))
        problems = handled(case, outcome)
        ok += not problems
        verdict = "handled" if not problems else "NOT handled: " + "; ".join(problems)
        rows.append(f"| {case.name} | {outcome.exit} | {outcome.seconds:.1f} | {verdict} |")
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"{ok} of {len(CASES)} cases handled (`python tests/test_hostile.py`)\n")
    print("| case | exit | seconds | |\n|---|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
