"""The nightly ablation: tonight's trials against a baseline night and a history.

- `run`      one night: the baseline found, the sweep run, compared, the verdict written and sent
- `history`  a spec's nightlies in MLflow: the baseline, the history, one still running
- `compare`  trials tables -> `Comparison` (per-cell paired deltas, bootstrap intervals,
             history z-scores, findings, the verdict); pure numpy/pandas
- `verdict`  `Comparison` -> ``verdict.md`` text and two PNG figures (matplotlib, Agg)
- `report`   ``ssvae nightly history``: a spec's nights from MLflow alone
- `cli`      ``ssvae nightly SPEC`` and ``ssvae nightly history SPEC_NAME``

The method, its defaults and their measured error rates: ``docs/nightly-statistics.md``.
"""
