"""The MLflow UI, opened in headless Chromium, shows a tracked search: its experiment, parent run and trials."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnas_nni.observers import ObserverGroup
from mnas_nni.tracking import MlflowTracker, ui_link
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
    """A real server holding one tracked three-trial search; yields (url, experiment id, parent run name)."""
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
            yield url, tracker.experiment_id


def test_ui_lists_the_experiment_and_its_trial_runs(tracked, tmp_path: Path):
    url, experiment_id = tracked
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


def test_the_printed_link_opens_the_model_training_view_with_the_trials(tracked, tmp_path: Path):
    url, experiment_id = tracked
    serve, link = ui_link(url, experiment_id)
    assert serve is None and link.endswith("?workflowType=machine_learning")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(link)
            parent = page.get_by_role("row").filter(has_text="ui-search").first
            parent.wait_for(timeout=WAIT_MS)
            parent.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
            page.get_by_role("row").filter(has_text=f"trial-{RECORDS[-1].trial:03d}").first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=tmp_path / "model-training.png", full_page=True)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert "Model training" in body and "No data" not in body
    assert all(f"trial-{r.trial:03d}" in body for r in RECORDS)

