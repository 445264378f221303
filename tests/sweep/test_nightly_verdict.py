"""verdict.md and the two figures of a nightly comparison."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pandas as pd
from test_nightly_compare import AXES, BASE, SEEDS, night, scaled

from ssvae_core.sweep.nightly.compare import compare
from ssvae_core.sweep.nightly.verdict import verdict_markdown, write_verdict


def regression_night() -> pd.DataFrame:
    tonight = scaled(1.2)
    tonight.loc[(tonight["method"] == "bilinear") & (tonight["train.seed"] == 2), "status"] = (
        "stopped"
    )
    return tonight


def test_verdict_md_lists_findings_first_then_one_row_per_cell() -> None:
    baseline = night(BASE)
    text = verdict_markdown(compare(regression_night(), baseline, [baseline] * 4, AXES, SEEDS))
    lines = text.splitlines()
    assert lines[0] == "# nightly: regression"
    assert "95% percentile bootstrap, 10000 resamples, seed 0" in lines[2]
    findings = [line for line in lines if line.startswith("- ")]
    assert [f.split(":")[0] for f in findings] == ["- regression gaussian/8", "- lost bilinear/29"]
    assert lines.index(findings[-1]) < lines.index("## Cells")
    rows = [
        line
        for line in lines
        if line.startswith("| gaussian/8") or line.startswith("| bilinear/29")
    ]
    assert rows[0] == (
        "| gaussian/8 | 3 | 2 | 2.4 | +0.4 | [+0.2, +0.8] | +20% | [+20, +20] | +12.00 (4) "
        "| 1.00 | regression |"
    )
    # seed 2 (7 px) stopped: tonight's median is over seeds 0 and 1, (6 + 5) / 2 = 5.5;
    # z = -0.5 / (max(0.05, 0.05 * 6) / 3)
    assert rows[1] == (
        "| bilinear/29 | 2 | 6 | 5.5 | +0 | [+0, +0] | +0% | [+0, +0] | -5.00 (4) | 1.00 | lost |"
    )
    # able to fail: the same night against itself has no findings and another verdict
    same = verdict_markdown(compare(baseline, baseline, [], AXES, SEEDS))
    assert same.splitlines()[0] == "# nightly: pass" and "- none" in same


def test_first_night_verdict_has_no_deltas() -> None:
    text = verdict_markdown(compare(night(BASE), None, [], AXES, SEEDS), title="nightly-small")
    assert text.startswith("# nightly-small: baseline\n")
    assert "| gaussian/8 | 0 | - | 2 | - | - | -% | - | - (0) | - | - |" in text


def test_write_verdict_draws_both_figures(tmp_path: Path) -> None:
    baseline = night(BASE)
    history = [baseline, night({**BASE, ("gaussian", 8): [1.1, 2.1, 4.1]}), baseline]
    paths = write_verdict(compare(regression_night(), baseline, history, AXES, SEEDS), tmp_path)
    assert [p.name for p in paths] == ["verdict.md", "paired-deltas.png", "cell-history.png"]
    for png in paths[1:]:
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0.05  # drawn
    first = write_verdict(compare(night(BASE), None, [], AXES, SEEDS), tmp_path / "first")
    assert all(p.stat().st_size > 0 for p in first)  # no pairs, no history: still drawn
