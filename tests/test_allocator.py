"""Host allocator settings (`ssvae_core.allocator`): when they apply, and that they change no
number. Each case runs in a fresh interpreter: the settings are per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUNE = "from ssvae_core import allocator; import json, os; r = allocator.tune_process(); "
SHOW = "print(json.dumps({**r, 'env': os.environ.get('THP_MEM_ALLOC_ENABLE')}))"


def _python(code: str, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings: Linux only")
def test_both_settings_apply_before_torch_is_imported() -> None:
    got = _python(TUNE + SHOW)
    assert got == {"reuse_freed_memory": True, "huge_pages": True, "env": "1"}


def test_huge_pages_are_not_claimed_once_torch_is_imported_or_when_refused() -> None:
    assert _python("import torch; " + TUNE + SHOW)["huge_pages"] is False
    refused = _python(TUNE + SHOW, THP_MEM_ALLOC_ENABLE="0")
    assert refused["huge_pages"] is False and refused["env"] == "0"


FIT = """
import json, sys
tune = sys.argv[1] == "tuned"
if tune:
    from ssvae_core import allocator
    assert allocator.tune_process()["huge_pages"]
import torch
from ssvae_core import config, loader
from ssvae_core.train import fit
torch.set_num_threads(1)
cfg = loader.from_dict(json.loads(sys.argv[2]), config.PRESETS["small"])
result = fit(cfg)
print(json.dumps({"probe": result.probe_error_px, "loss": result.history[-1]["loss"]}))
"""


def test_training_gives_the_same_numbers_with_and_without_them() -> None:
    from tests.conftest import TINY_OVERRIDES

    cfg = json.dumps(TINY_OVERRIDES)
    plain = _python(FIT.replace("sys.argv[1]", "'plain'").replace("sys.argv[2]", repr(cfg)))
    tuned = _python(FIT.replace("sys.argv[1]", "'tuned'").replace("sys.argv[2]", repr(cfg)))
    assert plain == tuned


@pytest.mark.parametrize("path", ["docker/Dockerfile", "cluster/local.yaml", "cluster/aws.yaml"])
def test_every_shipped_way_to_start_ray_gives_its_workers_the_huge_pages_env(path: str) -> None:
    """A local start sets `HUGE_PAGES_ENV` before ray.init (`sweep.cluster.connect`); on a
    cluster, the image (the k8s manifests' and compose's) and the launcher's ~/.bashrc do."""
    from ssvae_core.allocator import HUGE_PAGES_ENV

    text = (Path(__file__).resolve().parents[1] / path).read_text()
    exported = {
        word.strip("'\"")
        for line in text.splitlines()
        if line.lstrip().startswith("ENV ") or "'export " in line
        for word in line.split()
    }
    for name, value in HUGE_PAGES_ENV.items():
        assert f"{name}={value}" in exported, (path, sorted(exported))
