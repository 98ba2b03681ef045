"""The Neurocyte page in a real browser, served by a real Airflow api-server.

A lake is built by real ingest (demo ABFs with a quarantined gain-error file, a
pyABF sample, a synthetic MEA plate); ``airflow api-server`` runs with the
project's plugins folder (SQLite metadata DB, simple auth manager, all admins);
headless Debian Chromium, driven by Playwright, opens the page alone and inside
the Airflow UI, checks that every chart is drawn from real data, follows a
quarantined file's Data Docs link, and keeps screenshots in ``artifacts/browser``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
CHARTS = (
    "chart-status",
    "chart-fi",
    "chart-sweeps",
    "chart-raster",
    "chart-heatmap",
    "chart-trajectory",
)


def _chromium() -> str:
    for candidate in (os.environ.get("NEUROCYTE_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    pytest.skip("no chromium binary: run scripts/install_browser.sh (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"api-server exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"api-server not healthy after {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from tests.test_dashboard import build_sample_lake

    _chromium()
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    root = tmp_path_factory.mktemp("browser")
    sample = build_sample_lake(root)
    home = root / "airflow"
    (home / "dags").mkdir(parents=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "NEUROCYTE_LAKE": str(sample.lake),
    }
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    port = _free_port()
    log = root / "api-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow",
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended as one below
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{base}/api/v2/monitor/health", proc, log)
        yield {"base": base, "sample": sample, "log": log}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _wait_charts(target) -> None:
    target.wait_for_function(
        "ids => ids.every(id => { const d = document.getElementById(id);"
        " return d && d.dataset.state && d.dataset.state !== 'loading'; })",
        arg=list(CHARTS),
        timeout=90_000,
    )


def test_page_draws_every_chart_from_real_data(server, browser) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{server['base']}/neurocyte/")
        _wait_charts(page)
        _shot(page, "neurocyte_page")
        states = {c: page.get_attribute(f"#{c}", "data-state") for c in CHARTS}
        assert states == dict.fromkeys(CHARTS, "ready"), states
        for c in CHARTS:
            assert page.locator(f"#{c} svg.main-svg").count() >= 1, c
        # one f-I trace per published cell with long-square sweeps
        curves = page.request.get(f"{server['base']}/neurocyte/api/fi").json()["curves"]
        assert len(curves) >= 5
        assert page.locator("#chart-fi .scatterlayer .trace").count() == len(curves)
        # example sweeps: three traces read from the raw file, spike markers drawn
        assert page.locator("#chart-sweeps .scatterlayer .trace").count() >= 4
        assert page.locator("#chart-sweeps .scatterlayer .trace .points path").count() > 0
        assert page.locator("#chart-raster .scatterlayer .trace .points path").count() > 100
        assert page.locator("#chart-heatmap .heatmaplayer .hm image").count() == 1
        assert page.locator("#chart-status .barlayer .trace").count() >= 1
        assert page.locator("#chart-trajectory .scatterlayer .trace").count() == 2  # WT, KO
        assert page.locator("#chart-trajectory .errorbars path").count() > 0
        # the overview table shows the quarantined file's partition
        assert "1 quarantined" in page.inner_text("#totals")
        # switching cell and metric redraws
        page.select_option("#metric-select", "max_avg_rate_hz")
        page.wait_for_function(
            "() => document.querySelector('#chart-trajectory .gtitle')"
            "?.textContent.includes('Max firing rate')"
        )
        _shot(page, "neurocyte_page_metric")
        assert errors == []
    finally:
        context.close()


def test_quarantined_file_links_to_its_failed_expectations(server, browser) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{server['base']}/neurocyte/")
        row = page.locator("#problem-table tr[data-status='quarantined']").filter(
            has_text="WT-P14-c01-gain-error.abf"
        )
        row.wait_for(timeout=60_000)
        assert "v_baseline_mv" in row.inner_text()
        link = row.locator("a.failed-table[data-table='icephys_sweeps']")
        href = link.get_attribute("href")
        assert href and href.startswith("qc-docs/validations/icephys_sweeps/")
        response = page.request.get(f"{server['base']}/neurocyte/{href}")
        assert response.status == 200
        with context.expect_page() as popup_info:
            link.click()
        docs = popup_info.value
        docs.wait_for_load_state("domcontentloaded")
        docs.wait_for_timeout(1000)
        text = docs.inner_text("body")
        assert "v_baseline_mv" in text
        assert "Failed" in text or "Unsuccessful" in text
        _shot(docs, "data_docs_quarantined")
    finally:
        context.close()


def test_page_is_in_the_airflow_navigation(server, browser) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{server['base']}/")
        nav = page.get_by_role("link", name="Neurocyte")
        nav.wait_for(timeout=60_000)
        nav.click()
        page.wait_for_url("**/plugin/neurocyte", timeout=30_000)
        frame = next(f for f in _wait_for_frames(page) if f.url.rstrip("/").endswith("/neurocyte"))
        _wait_charts(frame)
        assert frame.get_attribute("#chart-fi", "data-state") == "ready"
        _shot(page, "airflow_ui_neurocyte")
    finally:
        context.close()


def _wait_for_frames(page, timeout_s: float = 60) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frames = [f for f in page.frames if f != page.main_frame and f.url.endswith("/neurocyte/")]
        if frames:
            return frames
        page.wait_for_timeout(250)
    raise AssertionError(f"no Neurocyte iframe in {[f.url for f in page.frames]}")
