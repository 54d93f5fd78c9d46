"""The MLflow UI, opened in headless Chromium, shows a tracked search: its experiment, parent run and trials."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnas_nni.run.observers import ObserverGroup
from mnas_nni.tracking import MlflowTracker
from tests.mlflow_server import mlflow_server
from tests.test_tracking import RECORDS, search_info

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

CHROMIUM = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
EXPERIMENT = "mnas-ui-check"
WAIT_MS = 60_000

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A real server holding one tracked three-trial search; yields (url, experiment id, the printed hint)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
            patch.setenv(name, value)
        with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
            tracker = MlflowTracker(tracking_uri=url, experiment_name=EXPERIMENT, run_name="ui-search")
            group = ObserverGroup(tracker)
            group.on_search_start(search_info(tmp_path_factory.mktemp("run")))
            for record in RECORDS:
                group.on_trial_end(record)
            group.on_search_end(RECORDS)
            group.close()
            yield url, tracker.experiment_id, tracker.ui_hint() or ""


def test_ui_lists_the_experiment_and_its_trial_runs(tracked, tmp_path: Path):
    url, experiment_id, _ = tracked
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/#/experiments")
            page.get_by_text(EXPERIMENT).first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=tmp_path / "experiments.png")

            page.goto(f"{url}/#/experiments/{experiment_id}/runs")
            parent = page.get_by_role("row").filter(has_text="ui-search").first
            parent.wait_for(timeout=WAIT_MS)
            # Trials are nested under the search's run: expand it.
            parent.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
            for record in RECORDS:
                page.get_by_role("row").filter(has_text=f"trial-{record.trial:03d}").first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=tmp_path / "runs.png", full_page=True)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert EXPERIMENT in body and "ui-search" in body
    assert all(f"trial-{r.trial:03d}" in body for r in RECORDS)
    assert "4 matching runs" in body
    for shot in ("experiments.png", "runs.png"):
        assert (tmp_path / shot).stat().st_size > 20_000


def printed(hint: str, label: str) -> str:
    """The link of a line `<label>: <link>` the search prints."""
    lines = [line for line in hint.splitlines() if line.startswith(f"{label}")]
    assert lines, f"no {label!r} line in the printed hint:\n{hint}"
    return lines[0].rsplit(" ", 1)[-1]


def test_the_printed_link_opens_the_trials_with_their_metrics_as_columns(tracked, tmp_path: Path):
    url, _, hint = tracked
    link = printed(hint, "MLflow runs:")
    assert link.startswith(f"{url}/#/") and "workflowType=machine_learning" in link
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(link)
            # No click on the search's run: the trials are listed, best reward first.
            for record in RECORDS:
                page.get_by_role("row").filter(has_text=f"trial-{record.trial:03d}").first.wait_for(timeout=WAIT_MS)
            headers = page.get_by_role("columnheader")
            headers.filter(has_text="reward").first.wait_for(timeout=WAIT_MS)
            columns = [text.strip() for text in headers.all_inner_texts()]
            page.screenshot(path=tmp_path / "model-training.png", full_page=True)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert {"reward", "accuracy", "latency_ms"} <= set(columns), columns
    assert "Model training" in body and "Model registry" in body and "Evaluation runs" not in body
    assert "Show more columns" not in body
    assert body.index("trial-001") < body.index("trial-003")  # reward 0.63, then 0.58
    assert "0.63" in body and "0.58" in body


def test_the_best_trial_link_opens_its_page_in_the_model_training_view(tracked, tmp_path: Path):
    url, experiment_id, hint = tracked
    link = printed(hint, "MLflow best trial")
    assert f"{url}/#/experiments/{experiment_id}/runs/" in link
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(link)
            page.get_by_text("trial-001").first.wait_for(timeout=WAIT_MS)
            page.get_by_role("cell", name="reward", exact=True).first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=tmp_path / "trial.png", full_page=True)
            body = page.inner_text("body")
        finally:
            browser.close()
    # The model-training view: its navigation (Runs, Model registry), not the GenAI one (Evaluation runs).
    assert "Model registry" in body and "Evaluation runs" not in body and "Evaluations" not in body
    assert "Metrics" in body and "0.63" in body
