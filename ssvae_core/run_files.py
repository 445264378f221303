"""What one run leaves on disk: config, metrics, per-epoch history and its figures.

Shared by ``ssvae train --out`` and the sweep's MLflow child runs, so both hold the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ssvae_core import config
from ssvae_core.balls import Video
from ssvae_core.files import write_text
from ssvae_core.metrics import json_ready
from ssvae_core.train import RunResult

FILES = ("config.yaml", "metrics.json", "history.csv", "fig1b.png", "fig1de.png")  # at most


def write_run(result: RunResult, video: Video, out: str | Path) -> list[Path]:
    """Write ``config.yaml``, ``metrics.json``, ``history.csv`` and figures; return the paths.

    Figures: ``fig1b.png`` (decoded vs true centres) when the run has a probe, and
    ``fig1de.png`` (the learned prior over the next location of the coral ball) for coupling
    runs. Every file of `FILES` an earlier run left in `out` goes first: none of them beside
    this run's, whether this run draws it or not, or a write fails. A link or a device there
    stays: it is written through, where it points (`files.replacing`).
    """
    import pandas as pd  # here: `ssvae train` checks FILES before training, without them

    from ssvae_core import figures

    out = Path(out)
    for stale in (out / name for name in FILES):
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
    paths = [
        write_text(
            out / "config.yaml", yaml.safe_dump(config.to_dict(result.config), sort_keys=False)
        ),
        write_text(out / "metrics.json", json.dumps(json_ready(result.metrics()), indent=2) + "\n"),
        write_text(out / "history.csv", pd.DataFrame(result.history).to_csv(index=False)),
    ]
    if result.probe is not None and result.status == "ok":
        paths.append(figures.fig1b(video, result.probe, out / "fig1b.png"))
    if result.coupling is not None and result.encoder is not None and result.status == "ok":
        paths.append(figures.fig1de(result.encoder, result.coupling, video, out / "fig1de.png"))
    return paths
