"""Neurocyte in the Airflow UI: the curators' and analysts' page, its JSON API, raw access.

An Airflow 3 plugin: a FastAPI app mounted in the api-server at ``/neurocyte``
and a navigation entry (``external_views``) that shows the page inside the
Airflow UI. The page (``neurocyte_static/``) draws Plotly charts from JSON
endpoints; each endpoint opens the published DuckDB catalog read-only and calls
:mod:`transforms.dashboard`. GX Data Docs are served from ``<lake>/qc/docs``
under ``/neurocyte/qc-docs/``, and raw windows come from
:func:`transforms.raw_access.fetch_snippet` at ``/neurocyte/api/raw/{file_id}``.

The lake is ``$NEUROCYTE_LAKE`` (default ``./lake``), read at each request. The
API and the Data Docs require an Airflow user (the same JWT the Airflow UI
holds, sent as its cookie or a bearer token); the HTML shell and the vendored
plotly.js do not.

Endpoints (all GET, under ``/neurocyte``)::

    /                               the page
    /api/overview                   files per lab/condition/timepoint and QC status
    /api/problems                   quarantined / failed files, reasons, Data Docs links
    /api/cells                      published patch-clamp cells
    /api/fi[?file_id=]              f-I curves (long-square sweeps)
    /api/cells/{file_id}/sweeps     example sweeps: raw trace + detected spikes
    /api/plates                     published MEA plates
    /api/plates/{file_id}/raster[?well=&start_s=&stop_s=&max_marks=]
    /api/plates/{file_id}/heatmap[?metric=]
    /api/metrics                    metrics with a trajectory
    /api/trajectory/{metric}[?lab=]  n, mean ± SEM, points per condition x timepoint
    /api/raw/{file_id}?start_s=&stop_s=[&well=&electrode=&sweep=&format=json|npy]
    /qc-docs/{path}                 the GX Data Docs site
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from airflow.plugins_manager import AirflowPlugin
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from transforms import spec
from transforms.errors import LakeError, NeurocyteError, UnsupportedRecording
from transforms.pipeline import qc
from transforms.serve import pages as dashboard

log = logging.getLogger(__name__)

URL_PREFIX: Final = "/neurocyte"
STATIC_DIR: Final = Path(__file__).resolve().parent / "neurocyte_static"
#: Largest raw window returned as JSON samples (per channel, after decimation).
RAW_JSON_MAX_POINTS: Final = 20_000


def plotly_js_path() -> Path | None:
    """plotly.min.js as shipped inside the ``plotly`` PyPI package (no CDN), or None."""
    try:
        path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def _airflow_user_dependency() -> Callable[..., Any]:
    """Airflow's own authentication (JWT from the UI cookie or a bearer token)."""
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


def _status_for(exc: NeurocyteError) -> int:
    if isinstance(exc, LakeError):
        return 404
    if isinstance(exc, UnsupportedRecording):
        return 422
    return 400


def create_app(lake: str | None = None, *, require_auth: bool = True) -> FastAPI:
    """Build the Neurocyte FastAPI app.

    Parameters
    ----------
    lake
        Lake root; None reads ``$NEUROCYTE_LAKE`` (default ``./lake``) per request.
    require_auth
        Guard the API and Data Docs with Airflow's authentication (needs a
        running Airflow api-server). Tests of the queries alone may pass False.

    Returns
    -------
    FastAPI
        The app, to be mounted at :data:`URL_PREFIX`.
    """
    app = FastAPI(
        title="Neurocyte",
        description="Counts, QC status, charts and raw windows of the Neurocyte lake",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    guards = [Depends(_airflow_user_dependency())] if require_auth else []
    api = APIRouter(prefix="/api", dependencies=guards)

    def lake_root() -> str:
        return spec.lake_root(lake)

    @contextmanager
    def catalog() -> Iterator[Any]:
        con = dashboard.open_catalog(lake_root())
        try:
            yield con
        finally:
            if con is not None:
                con.close()

    def run(fn: Callable[[Any], dict[str, Any]], empty: dict[str, Any]) -> dict[str, Any]:
        with catalog() as con:
            if con is None:
                return {
                    "available": False,
                    "message": f"no catalog at {spec.catalog_path(lake_root())} yet",
                    **empty,
                }
            return fn(con)

    @app.exception_handler(NeurocyteError)
    async def neurocyte_error(_request: Request, exc: NeurocyteError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status_for(exc))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        allowed = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
        if name not in allowed:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(allowed[name], headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        path = plotly_js_path()
        if path is None:
            raise HTTPException(503, "plotly.js not installed: add the 'plotly' package")
        return FileResponse(
            path,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/qc-docs", include_in_schema=False, dependencies=guards)
    def qc_docs_root() -> RedirectResponse:
        return RedirectResponse("qc-docs/index.html")

    @app.get("/qc-docs/{path:path}", include_in_schema=False, dependencies=guards)
    def qc_docs(path: str) -> FileResponse:
        root = qc.docs_dir(lake_root()).resolve()
        target = (root / (path or "index.html")).resolve()
        if not target.is_relative_to(root):
            raise HTTPException(404, "not found")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            raise HTTPException(404, f"no Data Docs page {path!r}")
        return FileResponse(target)

    @api.get("/overview")
    def overview() -> dict[str, Any]:
        out = run(dashboard.overview, {"status": [], "totals": {}, "recordings": []})
        out["lake"] = lake_root()
        return out

    @api.get("/problems")
    def problems() -> dict[str, Any]:
        return run(lambda con: dashboard.problems(con, lake=lake_root()), {"files": []})

    @api.get("/cells")
    def cells() -> dict[str, Any]:
        return run(dashboard.cells, {"cells": []})

    @api.get("/fi")
    def fi(file_id: str | None = None) -> dict[str, Any]:
        return run(lambda con: dashboard.fi_curves(con, file_id=file_id), {"curves": []})

    @api.get("/cells/{file_id}/sweeps")
    def example_sweeps(
        file_id: str, max_points: Annotated[int, Query(ge=100, le=50_000)] = 4000
    ) -> dict[str, Any]:
        def build(con: Any) -> dict[str, Any]:
            picks = dashboard.example_sweep_numbers(con, file_id)
            sweeps = []
            for p in picks:
                trace = dashboard.sweep_trace(
                    con, file_id, int(p["sweep_number"]), lake=lake_root(), max_points=max_points
                )
                sweeps.append({**trace, "role": p["role"]})
            return {
                "available": bool(sweeps),
                "message": "" if sweeps else "no sweeps",
                "file_id": file_id,
                "sweeps": sweeps,
            }

        return run(build, {"sweeps": []})

    @api.get("/plates")
    def plates() -> dict[str, Any]:
        return run(dashboard.plates, {"plates": []})

    @api.get("/plates/{file_id}/raster")
    def raster(
        file_id: str,
        well: str | None = None,
        start_s: float | None = None,
        stop_s: float | None = None,
        max_marks: Annotated[int, Query(ge=1, le=200_000)] = dashboard.RASTER_MAX_SPIKES,
    ) -> dict[str, Any]:
        return run(
            lambda con: dashboard.raster(
                con, file_id, well=well, start_s=start_s, stop_s=stop_s, max_marks=max_marks
            ),
            {"electrodes": [], "electrode_index": [], "time_s": [], "count": [], "n_spikes": 0},
        )

    @api.get("/plates/{file_id}/heatmap")
    def heatmap(file_id: str, metric: str = "mean_firing_rate_hz") -> dict[str, Any]:
        return run(
            lambda con: dashboard.well_heatmap(con, file_id, metric=metric),
            {"rows": [], "cols": [], "z": [], "conditions": []},
        )

    @api.get("/metrics")
    def metrics() -> dict[str, Any]:
        return run(dashboard.metrics, {"metrics": []})

    @api.get("/trajectory/{metric}")
    def trajectory(metric: str, lab: str | None = None) -> dict[str, Any]:
        return run(
            lambda con: dashboard.trajectory(con, metric, lab=lab),
            {"metric": metric, "timepoints": [], "series": []},
        )

    @api.get("/raw/{file_id}", response_model=None)
    def raw(
        file_id: str,
        start_s: float,
        stop_s: float,
        well: Annotated[list[str] | None, Query()] = None,
        electrode: Annotated[list[str] | None, Query()] = None,
        sweep: int | None = None,
        format: Literal["json", "npy"] = "json",
        max_points: Annotated[int, Query(ge=2, le=RAW_JSON_MAX_POINTS)] = 2000,
    ) -> Response | dict[str, Any]:
        """A raw window: ``.npy`` bytes (float32, samples × channels) or decimated JSON."""
        from transforms.serve.raw import envelope, fetch_snippet

        snip = fetch_snippet(
            file_id,
            lake=lake_root(),
            well=well,
            electrodes=electrode,
            sweep=sweep,
            start_s=start_s,
            stop_s=stop_s,
        )
        meta = snip.metadata()
        meta.pop("source_path", None)  # server paths stay on the server
        if format == "npy":
            import numpy as np

            buf = io.BytesIO()
            np.save(buf, snip.data)
            return Response(
                buf.getvalue(),
                media_type="application/octet-stream",
                headers={
                    "Content-Disposition": f'attachment; filename="{file_id[:12]}_snippet.npy"',
                    "X-Neurocyte-Snippet": json.dumps(meta),
                },
            )
        traces = []
        for j, name in enumerate(snip.channels):
            idx, y = envelope(snip.data[:, j], max_points)
            traces.append(
                {
                    "channel": name,
                    "t_s": [round(float(snip.start_s + k / snip.sampling_rate_hz), 7) for k in idx],
                    "y": [float(v) for v in y],
                }
            )
        return {**meta, "traces": traces}

    app.include_router(api)
    return app


class NeurocytePlugin(AirflowPlugin):
    """Registers the Neurocyte app in the api-server and its entry in the UI navigation."""

    name = "neurocyte"
    fastapi_apps = [  # noqa: RUF012  (AirflowPlugin declares these as plain lists)
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Neurocyte"}
    ]
    # No category: a top-level entry of the navigation bar, shown in an iframe at
    # /plugin/neurocyte. Relative hrefs, so a base_url behind a proxy keeps working.
    external_views = [  # noqa: RUF012
        {
            "name": "Neurocyte",
            "href": URL_PREFIX.lstrip("/") + "/",
            "icon": URL_PREFIX.lstrip("/") + "/static/icon.svg",
            "destination": "nav",
            "url_route": "neurocyte",
        }
    ]
