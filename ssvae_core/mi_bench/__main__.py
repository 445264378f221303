"""``python -m ssvae_core.mi_bench ARGS``: ``ssvae mi-bench ARGS``, through the same entry point."""

import sys

from ssvae_core.cli import main

sys.exit(main(["mi-bench", *sys.argv[1:]]))
