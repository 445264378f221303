"""The smoke sweep as a user sees it in MLflow's web UI: `mlflow ui`, driven in headless Chromium.

The module runs ``ssvae sweep sweeps/smoke.yaml`` once (sqlite tracking in a temporary working
directory), starts ``mlflow ui`` on a free 127.0.0.1 port against that database, and opens
pages in Chromium through Playwright, one fresh browser profile (empty storage) per test.
Every check reads what the page shows; the expected values come from MLflow's own records.

Needs the ``sweep`` extra, the ``playwright`` Python package and a Chromium on PATH (Debian:
``apt-get install chromium``); skipped, saying which is missing, without them. Playwright's
own browser download is never used. Screenshots go to each test's ``tmp_path``; set
``SSVAE_UI_SCREENSHOTS=docs/img/ui`` to copy them there as well (the README's pictures).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs the playwright package: pip install playwright"
)

from mlflow import MlflowClient  # noqa: E402

from ssvae_core import cli  # noqa: E402
from ssvae_core.sweep import ui  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "sweeps" / "smoke.yaml"
CHROMIUM = os.environ.get("SSVAE_CHROMIUM") or shutil.which("chromium")
# Headless, and quiet: without these Chromium keeps calling out to a network it cannot reach.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 60_000  # per page action: `mlflow ui` on a busy 2-core machine is slow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Chromium on PATH (apt-get install chromium) or $SSVAE_CHROMIUM",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowUi:
    """``mlflow ui`` on 127.0.0.1 against a sqlite file, in its own session (stopped by PID)."""

    def __init__(self, uri: str, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [
            str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri,
            "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--workers", "1",
        ]  # fmt: skip
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"mlflow ui not healthy within {timeout_s} s (see {self.log.name})")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        self.log.close()


@dataclass(frozen=True)
class Sweep:
    """The finished smoke sweep, its MLflow records, the UI serving them and a browser."""

    url: str  # the UI
    experiment_id: str
    parent: Any  # mlflow.entities.Run
    children: dict[str, Any]  # run name ("gaussian s0") -> Run
    browser: Any  # playwright Browser


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sweep]:
    root = tmp_path_factory.mktemp("mlflow-ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        args = ["sweep", str(SMOKE), "--storage-path", str(root / "runs"), "--tracking-uri", uri]
        assert cli.main(args) == 0
    mlflow = MlflowClient(uri)
    experiment = mlflow.get_experiment_by_name("smoke")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id])
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = {run.info.run_name: run for run in runs if run is not parent}
    assert len(children) == 4
    server = MlflowUi(uri, root / "mlflow-ui.log")
    try:
        server.wait()
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
            )  # launch() gives every context a fresh, temporary profile
            try:
                yield Sweep(server.url, experiment.experiment_id, parent, children, browser)
            finally:
                browser.close()
    finally:
        server.stop()


@pytest.fixture
def page(sweep: Sweep) -> Iterator[Any]:
    """A page in a new browser context: a first-time visitor (no stored UI settings)."""
    context = sweep.browser.new_context(viewport={"width": 1500, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """The viewport as ``tmp_path/name``, copied to ``$SSVAE_UI_SCREENSHOTS`` if set."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    if folder := os.environ.get("SSVAE_UI_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)
    return path


def close_assistant(page: Any) -> None:
    """Close MLflow's assistant panel (it takes a quarter of the width), if it is open."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()


def row_cells(page: Any, row_id: str) -> dict[str, str]:
    """A runs-table row's cells by column id (the grid splits a row into pinned parts)."""
    cells = page.locator(f"[role=row][row-id='{row_id}'] [role=gridcell][col-id]")
    return {cell.get_attribute("col-id"): cell.inner_text() for cell in cells.all()}


PROBE_COLUMN = "metrics.`probe_error_px`"
TRAINING_PAGES = "workflowType=machine_learning"  # MLflow's pages for training runs


def run_url(sweep: Sweep, run_id: str, tab: str = "") -> str:
    """A run's page (`tab`: "" or "/artifacts"), on the training-runs side of the UI."""
    return f"{sweep.url}/#/experiments/{sweep.experiment_id}/runs/{run_id}{tab}?{TRAINING_PAGES}"


@pytest.mark.xfail(
    reason="MLflow 3.17 opens an experiment on the page of the sidebar's GenAI / Model training "
    "switch (browser storage, GenAI by default), not of its mlflow.experimentKind tag: "
    "mlflow/mlflow#24498; the sweep's link adds workflowType=machine_learning",
    strict=False,
)
def test_the_bare_experiment_url_opens_on_the_runs_table(
    sweep: Sweep, page: Any, tmp_path: Path
) -> None:
    page.goto(f"{sweep.url}/#/experiments/{sweep.experiment_id}")
    page.wait_for_url(re.compile(r"/experiments/\d+/(runs|overview)"))
    page.wait_for_timeout(2000)  # let the page settle before the picture
    screenshot(page, tmp_path, "bare-experiment-url.png")
    assert "/runs" in page.url, page.url


def test_the_sweep_link_opens_the_runs_table_with_the_trials_under_their_parent(
    sweep: Sweep, page: Any, tmp_path: Path
) -> None:
    page.goto(ui.link(sweep.url, sweep.experiment_id))  # what `ssvae sweep` prints
    parent = page.locator(f"[role=row][row-id='{sweep.parent.info.run_id}']")
    parent.first.wait_for()
    close_assistant(page)
    assert re.search(r"/experiments/\d+/runs\?", page.url), page.url  # not the GenAI overview
    assert page.get_by_role("button", name="Model training").count() == 1
    header = page.locator(f"[role=columnheader][col-id='{PROBE_COLUMN}']")
    assert header.inner_text().strip() == "probe_error_px"  # the view's column, preselected
    cells = row_cells(page, sweep.parent.info.run_id)
    assert sweep.parent.info.run_name in cells["attributes.`Run Name`"]
    assert ui.PARENT_COLOUR in cells["attributes.`Run Name`"]  # the colour picker shows it
    for child in sweep.children.values():  # collapsed: the trials are inside the parent
        assert page.locator(f"[role=row][row-id='{child.info.run_id}']").count() == 0
    parent.first.get_by_role("button").first.click()  # the parent's expander
    colours = {"gaussian": ui.PALETTE[0], "bilinear": ui.PALETTE[1]}  # one per cell
    parent_index = int(parent.first.get_attribute("row-index"))
    for name, child in sweep.children.items():
        row = page.locator(f"[role=row][row-id='{child.info.run_id}']")
        row.first.wait_for()
        assert int(row.first.get_attribute("row-index")) > parent_index
        cells = row_cells(page, child.info.run_id)
        assert name in cells["attributes.`Run Name`"]
        assert colours[child.data.params["sweep.method"]] in cells["attributes.`Run Name`"]
        shown = float(cells[PROBE_COLUMN])
        assert shown == pytest.approx(child.data.metrics["probe_error_px"], rel=1e-9)
    screenshot(page, tmp_path, "runs.png")


def test_the_cells_view_groups_the_trials_by_method_with_their_mean(
    sweep: Sweep, page: Any, tmp_path: Path
) -> None:
    page.goto(ui.link(sweep.url, sweep.experiment_id, ui.CELLS_VIEW))
    page.get_by_text("Group: gaussian").wait_for()
    close_assistant(page)
    assert page.get_by_role("button", name=re.compile("Group by: sweep.method")).count() == 1
    for method in ("gaussian", "bilinear"):
        trials = [c for c in sweep.children.values() if c.data.params["sweep.method"] == method]
        group = row_cells(page, f"param.sweep.method.{method}")
        assert f"Group: {method}" in group["attributes.`Run Name`"]
        value, how = group[PROBE_COLUMN].split(" ", 1)
        assert how == "(average)"  # MLflow's aggregates: min, max, average (no median)
        mean = sum(t.data.metrics["probe_error_px"] for t in trials) / len(trials)
        assert float(value) == pytest.approx(mean, rel=1e-9)
        for trial in trials:  # each trial is a row of its group
            member = row_cells(page, f"param.sweep.method.{method}.{trial.info.run_id}")
            assert trial.info.run_name in member["attributes.`Run Name`"]
    screenshot(page, tmp_path, "cells.png")


def _markdown_rows(note: str) -> list[list[str]]:
    """The rows of the first markdown table in `note` (header first, rule left out)."""
    lines = [line.strip() for line in note.splitlines() if line.strip().startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [row for row in rows if not all(set(cell) <= set("-:") for cell in row)]


def test_the_parent_run_page_shows_the_study_table_from_its_description(
    sweep: Sweep, page: Any, tmp_path: Path
) -> None:
    rows = _markdown_rows(sweep.parent.data.tags["mlflow.note.content"])
    assert rows[0][0] == "method" and len(rows) == 3  # header, gaussian, bilinear
    run = sweep.parent.info.run_id
    page.goto(run_url(sweep, run))
    table = page.locator("table", has_text=rows[0][-1])  # the rendered description
    table.first.wait_for()
    close_assistant(page)
    shown = [
        [cell.inner_text().strip() for cell in tr.locator("th, td").all()]
        for tr in table.first.locator("tr").all()
    ]
    assert shown == rows
    table.first.scroll_into_view_if_needed()
    screenshot(page, tmp_path, "parent-description.png")


def _png_width(data: bytes) -> int:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(data[16:20], "big")  # IHDR: width, then height


@pytest.mark.parametrize("figure", ["fig1b.png", "fig1de.png"])
def test_a_trial_run_lists_its_figures_and_shows_them(
    sweep: Sweep, page: Any, tmp_path: Path, figure: str
) -> None:
    trial = sweep.children["gaussian s0"]
    run = trial.info.run_id
    logged = Path(trial.info.artifact_uri.removeprefix("file://")) / figure
    page.goto(run_url(sweep, run, "/artifacts"))
    listing = page.get_by_text(figure, exact=True)
    listing.wait_for()
    close_assistant(page)
    for name in ("fig1b.png", "fig1de.png", "history.csv", "config.yaml"):
        assert page.get_by_text(name, exact=True).count() == 1, name
    listing.click()
    image = page.locator(f"img[alt='{figure}']")  # the preview (its src is a blob)
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    assert image.evaluate("img => img.naturalWidth") == _png_width(logged.read_bytes())
    screenshot(page, tmp_path, f"artifact-{figure}")
