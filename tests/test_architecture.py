"""The import graph of ssvae_core against the layers of ARCHITECTURE.md.

Every module is in exactly one layer; it imports only its own layer or lower ones, never in a
cycle; Ray, Optuna and MLflow only in the heavy modules. The checker is shown failing on a
copy of the package with a deliberate upward import and a cycle, so it can fail.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY_LIBRARIES = ("ray", "optuna", "mlflow")


def read_layers(text: str) -> tuple[dict[str, int], set[str]]:
    """ARCHITECTURE.md -> (module -> layer, the heavy modules), from its two code blocks."""
    blocks = re.findall(r"<!-- (\w+):[^>]*-->\n```\n(.*?)```", text, re.S)
    found = dict(blocks)
    layers = {}
    for line in found["layers"].splitlines():
        rank, *modules = line.split()
        for module in modules:
            assert module not in layers, f"{module} is in two layers"
            layers[module] = int(rank)
    return layers, set(found["heavy"].split())


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the names it imports (module level and inside functions), relative names
    resolved; modules are named relative to the package (``sweep.spec``)."""
    graph = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_init else parts)
        here = ["ssvae_core", *parts[:-1]]  # the package a relative import starts from
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                imported.add(module)
                imported |= {f"{module}.{alias.name}" for alias in node.names}
        graph[name] = imported
    return graph


def violations(package: Path, layers: dict[str, int], heavy: set[str]) -> list[str]:
    """Everything in `package` that breaks the rules of ARCHITECTURE.md."""
    graph = import_graph(package)
    found = []
    for module in graph:
        if module and module not in layers:
            found.append(f"{module}: not in ARCHITECTURE.md's layer table")
    internal: dict[str, set[str]] = {}
    for module, names in graph.items():
        targets = set()
        for name in names:
            if name.split(".")[0] in HEAVY_LIBRARIES and module not in heavy:
                found.append(f"{module}: imports {name}, only the heavy modules may")
            if name.startswith("ssvae_core."):
                target = name.removeprefix("ssvae_core.")
                while target and target not in graph:  # `from pkg import name`: the module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    targets.add(target)
        internal[module] = targets
        for target in targets:
            if module in layers and target in layers and layers[target] > layers[module]:
                found.append(
                    f"{module} (layer {layers[module]}) imports {target} (layer {layers[target]})"
                )
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(internal)]
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other."""
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def _rules() -> tuple[dict[str, int], set[str]]:
    return read_layers((REPO / "ARCHITECTURE.md").read_text())


def test_the_package_follows_architecture_md() -> None:
    layers, heavy = _rules()
    assert violations(REPO / "ssvae_core", layers, heavy) == []
    assert set(layers) == set(import_graph(REPO / "ssvae_core")) - {""}  # no stale entries


def test_the_checker_catches_an_upward_import_a_cycle_and_ray_in_the_core(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "ssvae_core"
    shutil.copytree(REPO / "ssvae_core", copy)
    with open(copy / "balls.py", "a") as fh:
        fh.write("\nfrom ssvae_core.sweep import runner  # deliberate: upward\n")
    with open(copy / "couplings.py", "a") as fh:
        fh.write("\n\ndef _f() -> None:\n    from ssvae_core import train  # deliberate: a cycle\n")
    with open(copy / "sweep" / "spec.py", "a") as fh:
        fh.write("\nimport ray  # deliberate: Ray where a sweep file is only read\n")
    found = violations(copy, *_rules())
    assert "balls (layer 0) imports sweep.runner (layer 8)" in found
    assert "couplings (layer 1) imports train (layer 4)" in found
    assert any(v.startswith("import cycle:") and "couplings" in v for v in found)
    assert "sweep.spec: imports ray, only the heavy modules may" in found
    (copy / "extra.py").write_text('"""A module nobody put on the map."""\n')
    assert "extra: not in ARCHITECTURE.md's layer table" in violations(copy, *_rules())


BLOCK_SWEEP_EXTRA = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "optuna", "mlflow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
"""


def _without_sweep_extra(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_SWEEP_EXTRA + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_science_and_the_spec_need_no_sweep_extra(tmp_path: Path) -> None:
    code = f"""
import ssvae_core.train, ssvae_core.mi_bench.critics
from ssvae_core.sweep import spec
sweep = spec.load({str(REPO / "sweeps" / "paper-small.yaml")!r})
print(len(sweep.cells), sorted(m for m in sys.modules if m.split(".")[0] == "ray"))
"""
    done = _without_sweep_extra(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["12", "[]"]


def test_a_sweep_without_the_extra_says_which_extra_to_install(tmp_path: Path) -> None:
    code = f"""
from ssvae_core import cli
sys.exit(cli.main(["sweep", {str(REPO / "sweeps" / "smoke.yaml")!r}]))
"""
    done = _without_sweep_extra(code, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "needs the 'sweep' extra (ray, optuna, mlflow not installed)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_dry_run_needs_no_sweep_extra(tmp_path: Path) -> None:
    code = f"""
from ssvae_core import cli
sys.exit(cli.main(["sweep", {str(REPO / "sweeps" / "smoke.yaml")!r}, "--dry-run"]))
"""
    done = _without_sweep_extra(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "nothing was run (--dry-run)"


@pytest.mark.parametrize("case", ["missing", "broken"])
def test_a_bad_sweep_file_answers_without_importing_ray(case: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    if case == "broken":
        path.write_text("name: bad\ngrid: {train.lr: [0.1}\n")
    code = f"""
from ssvae_core import cli
status = cli.main(["sweep", {str(path)!r}])
print(status, sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "mlflow", "optuna")))
"""
    done = subprocess.run([sys.executable, "-c", "import sys" + code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["2", "[]"], done.stderr
    assert str(path) in done.stderr and "Traceback" not in done.stderr


def test_ssvae_report_redraws_a_sweep_without_the_extra(tmp_path: Path) -> None:
    directory = tmp_path / "runs" / "sweeps" / "paper-small"
    directory.mkdir(parents=True)
    rows = [f"{m},{s},ok,{1.0 + s}" for m in ("gaussian", "untrained") for s in (0, 1, 2)]
    (directory / "trials.csv").write_text("method,train.seed,status,probe_error_px\n" +
                                          "\n".join(rows) + "\n")  # fmt: skip
    code = f"""
from ssvae_core import cli
sys.exit(cli.main(["report", {str(REPO / "sweeps" / "paper-small.yaml")!r}]))
"""
    done = _without_sweep_extra(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (directory / "summary.md").read_text().startswith("# paper-small")
    assert (directory / "fig1c-paired.png").stat().st_size > 0


def test_the_command_line_and_its_help_import_no_torch() -> None:
    """`ssvae --help` and a subcommand's help answer in a blink (0.05 s to import the command
    line, README): torch's import alone takes over a second."""
    code = (
        "import contextlib, sys\n"
        "from ssvae_core import cli\n"
        "for argv in (['--help'], ['nightly', '--help'], ['sweep', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "        cli.main(argv)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["[]"], done.stderr
