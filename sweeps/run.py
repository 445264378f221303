"""Run a sweep on a Ray cluster's head node: ``ssvae sweep FILE --address auto``.

From a laptop::

    ray submit cluster/cluster.yaml sweeps/run.py -- sweeps/paper.yaml [--resume] [...]

``ray submit`` copies this script to the head and runs it there; every option of
``ssvae sweep`` is accepted, ``--address auto`` is added unless given. A relative spec path
that does not exist in the working directory is looked up in the checkout the ``ssvae``
package was installed from (the cluster's setup installs it editable). Tracking: pass
``--tracking-uri http://MLFLOW_HOST:5000`` (a sqlite file on the head is not visible to
trials on other nodes); ``--storage-path`` must be storage every node sees.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import ssvae_core
from ssvae_core.sweep import cli


def _locate(path: str) -> str:
    """`path` as given if it exists, else relative to the installed checkout, if there."""
    if Path(path).exists():
        return path
    candidate = Path(ssvae_core.__file__).resolve().parents[1] / path
    return str(candidate) if candidate.exists() else path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--address" or a.startswith("--address=") for a in args):
        args += ["--address", "auto"]
    args = [_locate(a) if a.endswith((".yaml", ".yml")) else a for a in args]
    return cli.main(["sweep", *args])


if __name__ == "__main__":
    sys.exit(main())
