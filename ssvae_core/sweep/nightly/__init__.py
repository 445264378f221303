"""The nightly ablation's statistics: tonight's trials against a baseline night and a history.

- `compare`  trials tables -> `Comparison` (per-cell paired deltas, bootstrap intervals,
             history z-scores, findings, the verdict); pure numpy/pandas
- `verdict`  `Comparison` -> ``verdict.md`` text and two PNG figures (matplotlib, Agg)

The method, its defaults and their measured error rates: ``docs/nightly-statistics.md``.
"""
