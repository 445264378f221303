"""`ssvae sweep`: studies of many runs on Ray Tune, tracked in MLflow (ARCHITECTURE.md).

Ray, Optuna and MLflow are imported only inside this package, and only by the modules that
run a sweep; validating a sweep file or redrawing its report needs none of them.

- `spec`       sweep YAML -> validated `SweepSpec` (every trial config built before Ray starts)
- `sections`   the small sections of a sweep file (search, scheduler, resources, budget)
- `tables`     trial rows -> per-cell tables, as written and printed
- `reports/`   each study's figures and summary.md (one module per study report)
- `space`      `SweepSpec` -> the Tuner runs: Ray Tune param spaces, Optuna, ASHA
- `trainable`  the plain function Ray Tune runs: `train.fit` + `tune.report` + checkpoints
- `runlog`     one MLflow run behind a write-ahead pending file that travels with checkpoints
- `tracking`   the sweep's parent run and the trials' child runs, restore-safe
- `ui`         what MLflow's UI shows: a colour per cell, two saved views, the link to them
- `progress`   one line per trial event while a sweep runs
- `runner`     `run_sweep(spec, ...) -> pandas.DataFrame`; `sync_sweep` replays pending logs
- `cli`        ``ssvae sweep FILE ...`` and ``ssvae report FILE ...``
"""
