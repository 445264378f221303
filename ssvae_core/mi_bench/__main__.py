"""``python -m ssvae_core.mi_bench``: the same as ``ssvae mi-bench``."""

import sys

from ssvae_core.mi_bench.cli import main

sys.exit(main())
