"""`ssvae sweep`: studies of many runs on Ray Tune, tracked in MLflow (DESIGN.md, "sweep/").

Ray, Optuna and MLflow are imported only inside this package.

- `spec`       sweep YAML -> validated `SweepSpec` (every trial config built before Ray starts)
- `sections`   the small sections of a sweep file (search, scheduler, resources, budget)
- `trainable`  the plain function Ray Tune runs: `train.fit` + `tune.report` + checkpoints
- `runlog`     one MLflow run behind a write-ahead pending file that travels with checkpoints
- `tracking`   the sweep's parent run and the trials' child runs, restore-safe
- `runner`     `run_sweep(spec, ...) -> pandas.DataFrame`; `sync_sweep` replays pending logs
- `progress`   one line per trial event while a sweep runs
- `report`     trial rows -> per-cell tables and the Fig. 1C chart
- `cli`        ``ssvae sweep FILE [--address A] [--tracking-uri U] [--resume] [--sync] ...``
"""
