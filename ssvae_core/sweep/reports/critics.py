"""Critic x estimator (Tschannen et al. 2019): final MI estimate against probe error."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from scipy import stats

from ssvae_core.figures import save
from ssvae_core.sweep.reports import ReportContext, ReportOutput
from ssvae_core.sweep.reports.common import finished, legend, markdown, spread


def report(trials: pd.DataFrame, context: ReportContext, out: Path) -> ReportOutput:
    """MI estimate vs probe error; Spearman correlation per estimator across trials."""
    done = finished(trials)
    coupling, estimator = "coupling.kind", "objective.estimator"
    rows = []
    for (c, e), group in trials.groupby([coupling, estimator], sort=False):
        ok = done[(done[coupling] == c) & (done[estimator] == e)]
        rows.append(
            {
                "critic (coupling)": c,
                "estimator": e,
                "probe px: median (min–max)": spread(ok["probe_error_px"]),
                "MI estimate (mean)": ok["mi_estimate"].mean(),
                "MI estimate (std)": ok["mi_estimate"].std(),
                "not ok": int((group["status"] != "ok").sum()),
            }
        )
    correlation = []
    for e, group in done.groupby(estimator, sort=False):
        rho, p = stats.spearmanr(group["mi_estimate"], group["probe_error_px"])
        correlation.append({"estimator": e, "trials": len(group), "spearman rho": rho, "p": p})
    text = markdown(pd.DataFrame(rows)) + "\n\n" + markdown(pd.DataFrame(correlation))
    fig, axes = plt.subplots(1, done[estimator].nunique() or 1, figsize=(11, 3.6), squeeze=False)
    kinds = list(trials[coupling].unique())
    for ax, (e, group) in zip(axes[0], done.groupby(estimator, sort=False), strict=False):
        for k, kind in enumerate(kinds):
            points = group[group[coupling] == kind]
            ax.scatter(points["mi_estimate"], points["probe_error_px"], color=f"C{k}", label=kind)
        ax.set(yscale="log", xlabel=f"final {e} estimate (nats)", title=e)
    axes[0][0].set_ylabel("probe error (px)")
    legend(axes[0][-1], title="critic")
    return ReportOutput([save(fig, out / "critics-mi-vs-probe.png")], text)
