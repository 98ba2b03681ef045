"""The Neurocyte pages in a real browser, served by a real Airflow api-server.

A lake is built by real ingest (demo ABFs with a quarantined gain-error file, a
pyABF sample, a synthetic MEA plate); ``airflow api-server`` runs with the
project's plugins folder (SQLite metadata DB, simple auth manager with named
users: ``curator`` (role op, a Neurocyte curator) and ``viewer`` (role viewer),
logged in through Airflow's own ``/auth/token``); headless Debian Chromium, driven
by Playwright, opens the pages alone and inside the Airflow UI, checks that every
chart is drawn from real data and agrees with SQL, that a newer cell selection wins
over a slower earlier response, excludes a well as the curator (a viewer may not),
opens a quarantined file's QC report with every non-local request blocked, and
keeps screenshots in ``artifacts/browser``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
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
PASSWORDS = {"curator": "curator-pw-for-tests", "viewer": "viewer-pw-for-tests"}
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real Airflow on PostgreSQL: api-server (the plugin), scheduler (LocalExecutor,
    parallelism 2), dag-processor and triggerer, with the project's DAGs unpaused; no
    scheduled runs (``use_job_schedule = False``): only what the page triggers runs."""
    from tests import airflow_cluster as ac
    from tests.test_dashboard import build_sample_lake

    _chromium()
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    missing = ac.missing_services()
    drivers = ac.pg_driver()
    if missing or drivers is None:
        pytest.fail(f"missing {missing or 'a PostgreSQL driver'}: run scripts/ci_services.sh")
    driver, async_driver = drivers
    root = tmp_path_factory.mktemp("browser")
    sample = build_sample_lake(root)
    home = root / "airflow"
    (home / "passwords.json").parent.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps(PASSWORDS))
    landing = root / "upload_landing"
    with ac.ServiceGroup() as infra, ac.postgres_server(infra) as pg:
        af = ac.make_airflow_home(
            home,
            executor="LocalExecutor",
            db_url=pg.url(driver),
            parallelism=2,
            extra_cfg={
                "core": {
                    "auth_manager": "airflow.api_fastapi.auth.managers.simple."
                    "simple_auth_manager.SimpleAuthManager",
                    "simple_auth_manager_users": "curator:op,viewer:viewer",
                    "simple_auth_manager_passwords_file": str(home / "passwords.json"),
                    "dags_are_paused_at_creation": "False",
                },
                "dag_processor": {"refresh_interval": "600", "min_file_process_interval": "600"},
            },
            secret_env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": pg.url(async_driver)},
            env={"NEUROCYTE_LAKE": str(sample.lake), "NEUROCYTE_LANDING": str(landing)},
        )
        af.airflow("db", "migrate", timeout=400)
        db = ac.MetaDB(pg.url(driver))
        try:
            with ac.ServiceGroup() as cluster:
                api = af.start(cluster, "api-server", "api-server")
                for name in ("scheduler", "dag-processor", "triggerer"):
                    af.start(cluster, name, name)
                ac.wait_api_ready(af, api)
                yield {
                    "base": f"http://127.0.0.1:{af.api_port}",
                    "sample": sample,
                    "log": api.log,
                    "landing": landing,
                    "db": db,
                    "cluster": cluster,
                    "home": home,
                }
        finally:
            db.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _login(browser, server, user: str = "curator"):
    """A browser context holding the user's Airflow JWT cookie (from POST /auth/token)."""
    req = urllib.request.Request(
        f"{server['base']}/auth/token",
        data=json.dumps({"username": user, "password": PASSWORDS[user]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        token = json.loads(r.read())["access_token"]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies([{"name": "_token", "value": token, "url": server["base"]}])
    return context


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
    context = _login(browser, server)
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
        # one f-I trace per published cell with QC-passing long-square sweeps, plus one
        # trace of QC-failed sweeps on their own axes when there are any
        curves = page.request.get(f"{server['base']}/neurocyte/api/fi").json()["curves"]
        assert len(curves) >= 5
        passing = sum(any(q is not False for q in c["qc_pass"]) for c in curves)
        failed = sum(q is False for c in curves for q in c["qc_pass"])
        assert page.get_attribute("#chart-fi", "data-failed-sweeps") == str(failed)
        assert page.locator("#chart-fi .scatterlayer .trace").count() == passing + (failed > 0)
        # example sweeps: three traces read from the raw file, spike markers drawn
        assert page.locator("#chart-sweeps .scatterlayer .trace").count() >= 4
        assert page.locator("#chart-sweeps .scatterlayer .trace .points path").count() > 0
        assert page.locator("#chart-raster .scatterlayer .trace .points path").count() > 100
        assert page.locator("#chart-heatmap .heatmaplayer .hm image").count() == 1
        assert page.locator("#chart-status .barlayer .trace").count() >= 1
        # group view: per condition (WT, KO) the points and the mean ± SEM with n
        assert page.locator("#chart-trajectory .scatterlayer .trace").count() == 4
        assert page.locator("#chart-trajectory .errorbars path").count() > 0
        assert "n=" in page.inner_text("#chart-trajectory")
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
    context = _login(browser, server)
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
    context = _login(browser, server)
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


def _catalog(server):
    import duckdb

    return duckdb.connect(str(server["sample"].lake / "catalog.duckdb"), read_only=True)


def test_every_api_endpoint_answers_401_without_a_login(server, browser) -> None:
    context = browser.new_context()
    try:
        fid = "a" * 64
        for path in (
            "api/overview",
            "api/search",
            f"api/cells/{fid}",
            f"api/plates/{fid}",
            "api/curation",
            "api/uploads/" + "f" * 32,
            "api/download/mea_spikes.csv",
            "qc-report/",
            "qc-docs/index.html",
        ):
            r = context.request.get(f"{server['base']}/neurocyte/{path}")
            assert r.status == 401, (path, r.status)
        for path in ("api/curation", "api/uploads"):
            r = context.request.post(f"{server['base']}/neurocyte/{path}", data={})
            assert r.status == 401, path
        r = context.request.put(f"{server['base']}/neurocyte/api/uploads/{'f' * 32}?offset=0")
        assert r.status == 401
    finally:
        context.close()


def test_a_newer_cell_selection_wins_over_a_slower_earlier_response(server, browser) -> None:
    context = _login(browser, server)
    page = context.new_page()
    try:
        page.goto(f"{server['base']}/neurocyte/")
        _wait_charts(page)
        cells = page.request.get(f"{server['base']}/neurocyte/api/cells").json()["cells"]
        first, last = cells[0], cells[-1]
        slow = f"**/api/cells/{first['file_id']}/sweeps*"

        def delayed(route) -> None:
            time.sleep(2.0)  # the first cell's sweeps answer late
            route.continue_()

        page.route(slow, delayed)
        page.select_option("#cell-select", first["file_id"])
        page.wait_for_timeout(100)
        page.select_option("#cell-select", last["file_id"])
        name = last["cell_id"] or last["file_name"]
        page.wait_for_function(
            "name => document.querySelector('#chart-sweeps .gtitle')?.textContent.includes(name)",
            arg=name,
            timeout=60_000,
        )
        page.wait_for_timeout(3000)  # past the slow response
        assert page.get_attribute("#chart-sweeps", "data-file-id") == last["file_id"]
        title = page.text_content("#chart-sweeps .gtitle") or ""
        assert name in title
        _shot(page, "fast_switch_last_cell_wins")
    finally:
        context.close()


def _assert_no_critical_nwb(path: Path) -> None:
    """nwbinspector's default checks find nothing CRITICAL. (The DANDI configuration also
    wants the subject's species, which these generated cells' sidecars do not give and the
    export does not invent; ``test_export_nwb`` runs it on a cell that has one.)"""
    from nwbinspector import Importance, inspect_nwbfile

    messages = list(inspect_nwbfile(nwbfile_path=path))
    critical = [m for m in messages if m.importance == Importance.CRITICAL]
    assert critical == [], [f"{m.check_function_name}: {m.message}" for m in critical]


def test_search_then_cell_and_plate_pages_agree_with_sql(server, browser) -> None:
    context = _login(browser, server)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    con = _catalog(server)
    try:
        page.goto(f"{server['base']}/neurocyte/search.html")
        page.locator("#results-table").wait_for(timeout=60_000)
        page.locator("input[data-facet='condition'][value='KO']").check()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results-table tbody tr')]"
            ".every(tr => tr.children[5].textContent.split(',').includes('KO'))"
        )
        _shot(page, "search_condition_ko")
        link = page.locator("#results-table tr[data-kind='cell'] a.result-link").first
        fid = link.get_attribute("href").split("file_id=")[1]
        link.click()
        page.wait_for_url("**/cell.html?file_id=*")
        page.wait_for_function(
            "() => ['chart-sweep','chart-cell-fi'].every(id =>"
            " document.getElementById(id)?.dataset.state === 'ready')",
            timeout=90_000,
        )
        (n_feat,) = con.execute(
            "SELECT count(*) FROM (UNPIVOT (SELECT * EXCLUDE (file_id, ingest_id, "
            "transform_version, params_json, lab, condition, timepoint, timepoint_days, "
            "analysis) FROM icephys_cell_features WHERE file_id = ?) ON COLUMNS(*) "
            "INTO NAME k VALUE v)",
            [fid],
        ).fetchone()
        assert page.locator("#feature-table tbody tr").count() == n_feat
        sweep = int(page.get_attribute("#chart-sweep", "data-sweep"))
        (n_spikes,) = con.execute(
            "SELECT spike_count FROM icephys_sweeps WHERE file_id = ? AND sweep_number = ?",
            [fid, sweep],
        ).fetchone()
        if n_spikes:
            assert f"spikes ({n_spikes})" in page.inner_text("#chart-sweep")
        assert page.get_attribute("#chart-stimulus", "data-state") == "ready"
        _shot(page, "cell_page")
        # the cell's NWB, downloaded through the page's link: DANDI-clean
        with page.expect_download(timeout=120_000) as nwb_download:
            page.click("#download-nwb")
        nwb_path = ARTIFACTS / "downloads" / f"{fid}.nwb"
        nwb_path.parent.mkdir(parents=True, exist_ok=True)
        nwb_download.value.save_as(str(nwb_path))
        _assert_no_critical_nwb(nwb_path)
        plate = con.execute("SELECT DISTINCT file_id FROM mea_recordings").fetchone()[0]
        page.goto(f"{server['base']}/neurocyte/plate.html?file_id={plate}")
        page.wait_for_function(
            "() => ['chart-plate-heatmap','chart-plate-raster','chart-by-div'].every(id =>"
            " document.getElementById(id)?.dataset.state === 'ready')",
            timeout=90_000,
        )
        (n_wells,) = con.execute(
            "SELECT count(*) FROM mea_recordings WHERE file_id = ?", [plate]
        ).fetchone()
        assert (
            page.locator("#plate-map td[data-well]").filter(has_text=re.compile(r"\w")).count()
            == n_wells
        )
        page.select_option("#heatmap-metric", "weighted_mean_firing_rate_hz")
        page.wait_for_function(
            "() => document.getElementById('chart-plate-heatmap').dataset.metric"
            " === 'weighted_mean_firing_rate_hz'"
        )
        (n_nb,) = con.execute(
            "SELECT count(*) FROM mea_network_bursts WHERE file_id = ?", [plate]
        ).fetchone()
        assert page.get_attribute("#chart-plate-raster", "data-network-bursts") == str(n_nb)
        _shot(page, "plate_page")
        # the plate's well metrics as CSV through the page's link: the rows SQL has
        with page.expect_download(timeout=60_000) as csv_download:
            page.click("#download-wells-csv")
        csv_path = ARTIFACTS / "downloads" / f"{plate}_wells.csv"
        csv_download.value.save_as(str(csv_path))
        with csv_path.open(newline="", encoding="utf-8") as fh:
            got = list(csv.DictReader(fh))
        want = con.execute(
            "SELECT well, weighted_mean_firing_rate_hz FROM mea_well_metrics "
            "WHERE file_id = ? ORDER BY well",
            [plate],
        ).fetchall()
        assert len(got) == len(want) > 0
        assert {r["file_id"] for r in got} == {plate}
        by_well = {r["well"]: r["weighted_mean_firing_rate_hz"] for r in got}
        for well, wmfr in want:
            assert (
                (by_well[well] in ("", None))
                if wmfr is None
                else (float(by_well[well]) == pytest.approx(wmfr, rel=1e-12))
            ), well
        assert errors == []
    finally:
        con.close()
        context.close()


def test_curator_excludes_a_well_and_the_group_view_changes(server, browser) -> None:
    con = _catalog(server)
    plate, well, cond = con.execute(
        "SELECT file_id, well, condition FROM mea_well_metrics ORDER BY well LIMIT 1"
    ).fetchone()
    con.close()
    viewer = _login(browser, server, "viewer")
    try:
        r = viewer.request.post(
            f"{server['base']}/neurocyte/api/curation",
            data={
                "action": "exclude",
                "target_kind": "well",
                "file_id": plate,
                "well": well,
                "reason": "viewer tries",
            },
        )
        assert r.status == 403
    finally:
        viewer.close()
    context = _login(browser, server)
    page = context.new_page()
    try:
        page.goto(f"{server['base']}/neurocyte/")
        _wait_charts(page)
        url = f"{server['base']}/neurocyte/api/trajectory/mean_firing_rate_hz"
        before = {s["condition"]: s["n"][0] for s in page.request.get(url).json()["series"]}
        form = page.locator("#curation-form")
        form.locator("select[name=action]").select_option("exclude")
        form.locator("select[name=target_kind]").select_option("well")
        form.locator("input[name=file_id]").fill(plate)
        form.locator("input[name=well]").fill(well)
        form.locator("input[name=reason]").fill("electrode short (browser test)")
        form.locator("button[type=submit]").click()
        page.wait_for_function(
            "() => document.getElementById('curation-result').dataset.state === 'ok'",
            timeout=60_000,
        )
        page.locator(f"#excluded-table tr[data-well='{well}']").wait_for(timeout=30_000)
        after = {s["condition"]: s["n"][0] for s in page.request.get(url).json()["series"]}
        assert after[cond] == before[cond] - 1
        con = _catalog(server)
        try:
            rows = con.execute(
                "SELECT curator, action, reason FROM curation_log WHERE well = ?", [well]
            ).fetchall()
        finally:
            con.close()
        assert ("curator", "exclude", "electrode short (browser test)") in rows
        _shot(page, "curation_excluded_well")
    finally:
        context.close()


def test_qc_report_of_a_quarantined_file_works_offline(server, browser) -> None:
    context = _login(browser, server)
    page = context.new_page()
    outside: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(server["base"]):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    try:
        page.goto(f"{server['base']}/neurocyte/search.html?qc_status=quarantined")
        link = page.locator("#results-table a.result-link").first
        link.wait_for(timeout=60_000)
        link.click()
        page.locator("#qc-report-link").wait_for(timeout=60_000)
        with context.expect_page() as popup:
            page.locator("#qc-report-link").click()
        report = popup.value
        report.route("**/*", only_local)
        report.wait_for_load_state("load")
        assert "WT-P14-c01-gain-error.abf" in report.inner_text("#file-name")
        assert "v_baseline_mv" in report.inner_text("body")
        color = report.evaluate("getComputedStyle(document.querySelector('h1')).color")
        assert color == "rgb(11, 114, 133)"  # styled by its own inline CSS
        _shot(report, "qc_report_quarantined_offline")
        assert outside == []
    finally:
        context.close()


def _row(name: str) -> str:
    return f"document.querySelector(`#upload-table tr[data-file='${{{name}}}']`)"


def test_upload_page_triggers_the_scheduler_and_follows_files_to_published(
    server, browser, tmp_path: Path
) -> None:
    """Drop a real ABF, a spike list with its plate map and a file of junk on the upload
    page: the page streams them into the landing zone, triggers ``neurocyte_ingest``
    through Airflow's REST API, and the real scheduler runs it (LocalExecutor). The page
    follows each file through sensed, extracted and QC to published; the junk file ends
    failed with a message naming it, and nothing of it is published."""
    from tests import airflow_cluster as ac
    from tests.conftest import ABF_DIR

    db, cluster = server["db"], server["cluster"]
    ac.wait_dag_parsed(db, "neurocyte_ingest", cluster)
    shared_mea = ABF_DIR.parent / "mea"
    junk = tmp_path / "junk_upload.abf"
    junk.write_bytes(bytes(range(256)) * 64)
    files = [
        ABF_DIR / "File_axon_5.abf",
        shared_mea / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz",
        shared_mea / "exampleRecording_1012016_plate1_expLog.csv",
        junk,
    ]
    context = _login(browser, server)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    t0 = time.monotonic()
    try:
        page.goto(f"{server['base']}/neurocyte/upload.html")
        page.fill("#upload-form input[name=lab]", "labUp")
        page.fill("#upload-form input[name=condition]", "WT")
        page.fill("#upload-form input[name=timepoint]", "DIV3")
        page.fill("#upload-form input[name=species]", "Mus musculus")
        page.set_input_files("#file-input", [str(f) for f in files])
        page.wait_for_function(
            "() => document.getElementById('ingest-run')?.dataset.runId !== undefined",
            timeout=120_000,
        )
        run_id = page.get_attribute("#ingest-run", "data-run-id")
        assert run_id, page.inner_text("#ingest-run")  # the REST trigger was accepted
        landed = server["landing"] / "labUp" / "WT" / "DIV3"
        assert sorted(p.name for p in landed.iterdir() if not p.name.endswith(".meta.json")) == (
            sorted(f.name for f in files)
        )
        final = {files[0].name: "published", files[1].name: "published", junk.name: "failed"}
        ends = ["published", "quarantined", "failed", "not ingested"]
        for name in final:  # each row reaches an end: published, ..., or "not ingested"
            page.wait_for_function(
                f"([name, ends]) => ends.includes({_row('name')}?.dataset.stage)",
                arg=[name, ends],
                timeout=240_000,
            )
        rows = page.locator("#upload-table tbody tr")
        stages = {
            rows.nth(k).get_attribute("data-file"): rows.nth(k).get_attribute("data-stage")
            for k in range(rows.count())
        }
        assert {n: stages[n] for n in final} == final, page.inner_text("#upload-table")
        t_done = time.monotonic()
        _shot(page, "upload_published")
        # the page went through the run's stages in order, never backwards
        order = ["landed", "sensed", "extracted", "QC", "published"]
        for name in (files[0].name, files[1].name):
            seen = page.get_attribute(f"#upload-table tr[data-file='{name}']", "data-stages")
            steps = seen.split(">")
            assert steps[0] == "landed" and steps[-1] == "published", seen
            assert "QC" in steps, seen
            assert [order.index(s) for s in steps] == sorted(order.index(s) for s in steps), seen
            print(f"{name}: {seen}")
        bad = page.locator(f"#upload-table tr[data-file='{junk.name}']")
        assert "bad" in (bad.get_attribute("class") or "")
        assert junk.name in bad.locator("td.reason").inner_text()
        # one run, the page's: triggered through the REST API as the logged-in curator
        # (Airflow records a request with a Referer as UI), run by the scheduler
        state = ac.wait_run_finished(db, "neurocyte_ingest", run_id, cluster, timeout=120)
        runs = db.rows(
            "SELECT run_id, run_type, triggered_by, triggering_user_name, state, conf FROM dag_run"
        )
        assert [(r["run_id"], r["run_type"], r["triggering_user_name"]) for r in runs] == [
            (run_id, "manual", "curator")
        ], runs
        assert state == "success"
        assert str(runs[0]["triggered_by"]).upper().rsplit(".", 1)[-1] in ("UI", "REST_API")
        tis = ac.task_instances(db, "neurocyte_ingest", run_id)
        done = {(t["task_id"], t["state"]) for t in tis}
        for task in ("wait_for_files", "plan_batches", "extract", "gate_and_commit", "publish"):
            assert (task, "success") in done, tis
        # nothing of the junk file is published; its failure names it
        con = _catalog(server)
        try:
            junk_id = con.execute(
                "SELECT file_id, status, reason FROM ingest_log WHERE file_name = ?", [junk.name]
            ).fetchall()
            assert [r[1] for r in junk_id] == ["failed"] and junk.name in junk_id[0][2]
            for table in ("icephys_recordings", "icephys_sweeps", "icephys_cell_features"):
                (n,) = con.execute(
                    f"SELECT count(*) FROM {table} WHERE file_id = ?",
                    [junk_id[0][0]],
                ).fetchone()
                assert n == 0, table
            (n_new,) = con.execute(
                "SELECT count(*) FROM icephys_recordings WHERE lab = 'labUp'"
            ).fetchone()
            assert n_new == 1
        finally:
            con.close()
        assert errors == []
        print(f"upload to published through the scheduler: {t_done - t0:.1f} s")
    finally:
        context.close()
