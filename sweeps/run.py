"""Run a sweep (or a nightly) on a Ray cluster's head node: ``ssvae sweep FILE --address auto``.

From a laptop::

    ray submit cluster/local.yaml sweeps/run.py -- sweeps/paper.yaml [--resume] [...]
    ray submit cluster/local.yaml sweeps/run.py -- nightly sweeps/nightly.yaml [...]

``ray submit`` copies this script to the head and runs it there. The first argument may name
the subcommand (``sweep`` or ``nightly``; a spec path alone means ``sweep``); every option of
that ``ssvae`` subcommand is accepted, and ``--address auto`` is added unless given. A relative
spec path that does not exist in the working directory is looked up in the checkout the
``ssvae`` package was installed from (the cluster's setup installs it editable). Tracking: pass
``--tracking-uri http://MLFLOW_HOST:5000`` (a sqlite file on the head is not visible to
trials on other nodes); ``--storage-path`` must be storage every node sees.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import ssvae_core
from ssvae_core import cli


def _locate(path: str) -> str:
    """`path` as given if it exists, else relative to the installed checkout, if there."""
    if Path(path).exists():
        return path
    candidate = Path(ssvae_core.__file__).resolve().parents[1] / path
    return str(candidate) if candidate.exists() else path


SUBCOMMANDS = ("sweep", "nightly")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in SUBCOMMANDS else "sweep"
    if not any(a == "--address" or a.startswith("--address=") for a in args):
        args += ["--address", "auto"]
    args = [_locate(a) if a.endswith((".yaml", ".yml")) else a for a in args]
    return cli.main([command, *args])


if __name__ == "__main__":
    sys.exit(main())
