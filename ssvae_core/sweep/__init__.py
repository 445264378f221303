"""`ssvae sweep`: studies of many runs on Ray Tune, tracked in MLflow (ARCHITECTURE.md).

Ray, Optuna and MLflow are imported only inside this package, and only by the modules that
run a sweep; validating a sweep file or redrawing its report needs none of them.

Each module is one concept: ARCHITECTURE.md's table names them, and its layers which may
import which. `runner.run_sweep` runs a sweep; `cli` is ``ssvae sweep`` and ``ssvae report``.
"""
