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
    /api/raw/{file_id}?start_s=&stop_s=[&well=&electrode=&sweep=&format=json|npy|nwb]
    /search.html, /cell.html?file_id=, /plate.html?file_id=   the other pages
    /api/search?lab=&condition=&...&date_from=&date_to=&q=    faceted search
    /api/cells/{file_id}            the cell page: metadata, QC, features, sweeps, f-I
    /api/cells/{file_id}/sweeps/{n} response + stimulus + spikes + spike waveforms
    /api/plates/{file_id}           the plate page: metadata, plate map, wells
    /api/plates/{file_id}/network-bursts[?well=&start_s=&stop_s=]
    /api/plates/{file_id}/by-div?metric=   a well metric over the plate's DIVs
    /api/download/{view}.csv|parquet[?file_id=&lab=&condition=&timepoint=&...]  streamed
    /api/download/nwb/{file_id}     a patch-clamp recording as NWB (metadata, features)
    /api/download/original/{file_id}  the source file (checked against its file_id)
    /qc-report/, /qc-report/{file_id}  offline QC reports: every batch; one file's
    POST /api/uploads               open a resumable upload (curator role): file name,
                                    size, lab/condition/timepoint, sidecar fields
    PUT /api/uploads/{id}?offset=   the next bytes (streamed to disk, or one S3 multipart
                                    part); 409 + where to resume
    DELETE /api/uploads/{id}        drop an unfinished upload and its bytes (curator role)
    /api/uploads/{id}               bytes received, stage: uploading, landed, published,
                                    quarantined or failed (with the reason)
    /api/curation[?file_id=]        curator actions (curation_log), newest first
    /api/excluded                   excluded recordings, wells, sweeps with reasons
    /api/me                         the user, their roles, whether they are a curator
    /qc-docs/{path}                 the GX Data Docs site

    POST /api/curation              a curator action (curator role): note, exclude,
                                    restore, accept_quarantined on a recording, well
                                    or sweep, with a reason; appended to curation_log,
                                    then the catalog is republished
"""

from __future__ import annotations

import functools
import io
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from airflow.plugins_manager import AirflowPlugin
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel, Field

from transforms import spec
from transforms.errors import LakeError, NeurocyteError, UnsupportedRecording
from transforms.pipeline import qc
from transforms.serve import pages as dashboard

log = logging.getLogger(__name__)

URL_PREFIX: Final = "/neurocyte"
STATIC_DIR: Final = Path(__file__).resolve().parent / "neurocyte_static"
#: Largest raw window returned as JSON samples (per channel, after decimation).
RAW_JSON_MAX_POINTS: Final = 20_000
#: Serialises this process's catalog publishes after curation actions (log_seq and the
#: temporary catalog file name are per process).
_PUBLISH_LOCK: Final = threading.Lock()
#: The HTML pages besides the overview (``/neurocyte/<page>.html``): one shell holding no
#: data (``neurocyte_static/page.html``), its ``body[data-page]`` naming the page.
PAGES: Final = frozenset({"search", "cell", "plate", "upload"})


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


#: Airflow roles that make a user a Neurocyte **curator** (may write curation actions),
#: comma-separated, case-insensitive. The simple auth manager's roles are viewer, user,
#: op and admin; with FAB, create a role named ``neurocyte_curator`` (or list yours).
CURATOR_ROLES_ENV: Final = "NEUROCYTE_CURATOR_ROLES"
DEFAULT_CURATOR_ROLES: Final = ("admin", "op", "neurocyte_curator")


def user_roles(user: Any) -> tuple[str, ...]:
    """The Airflow roles of a user, lower case: the simple auth manager's one ``role``
    or FAB's ``roles`` (objects with a ``name``)."""
    names: list[str] = []
    role = getattr(user, "role", None)
    if isinstance(role, str) and role:
        names.append(role)
    for r in getattr(user, "roles", None) or ():
        name = getattr(r, "name", r)
        if isinstance(name, str) and name:
            names.append(name)
    return tuple(n.strip().lower() for n in names)


def curator_roles() -> frozenset[str]:
    """The roles granting the curator role (``$NEUROCYTE_CURATOR_ROLES`` or the default)."""
    import os

    raw = os.environ.get(CURATOR_ROLES_ENV)
    names = raw.split(",") if raw else DEFAULT_CURATOR_ROLES
    return frozenset(n.strip().lower() for n in names if n.strip())


def is_curator(user: Any) -> bool:
    """Whether an Airflow user holds the Neurocyte curator role."""
    return bool(set(user_roles(user)) & curator_roles())


class UploadRequest(BaseModel):
    """An upload session: the file, its partition and its sidecar fields."""

    file_name: str = Field(min_length=1, max_length=200)
    size_bytes: int = Field(gt=0)
    lab: str
    condition: str
    timepoint: str
    sidecar: dict[str, str] = Field(default_factory=dict)


class CurationRequest(BaseModel):
    """A curator action (see :mod:`transforms.lake.curation`)."""

    action: Literal["note", "exclude", "restore", "accept_quarantined"]
    target_kind: Literal["recording", "well", "sweep"]
    file_id: str = Field(min_length=64, max_length=64)
    reason: str = Field(min_length=1, max_length=4000)
    well: str | None = None
    sweep_number: int | None = None


def _status_for(exc: NeurocyteError) -> int:
    from transforms.serve.upload import UploadConflict

    if isinstance(exc, UploadConflict):
        return 409
    if isinstance(exc, LakeError):
        return 404
    if isinstance(exc, UnsupportedRecording):
        return 422
    return 400


def create_app(
    lake: str | None = None, *, require_auth: bool = True, landing: str | None = None
) -> FastAPI:
    """Build the Neurocyte FastAPI app.

    Parameters
    ----------
    lake
        Lake root; None reads ``$NEUROCYTE_LAKE`` (default ``./lake``) per request.
    require_auth
        Guard the API and Data Docs with Airflow's authentication (needs a
        running Airflow api-server). Tests of the queries alone may pass False.
    landing
        Landing zone uploads go to; None reads ``$NEUROCYTE_LANDING`` per request.

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
    get_user = _airflow_user_dependency()
    guards = [Depends(get_user)] if require_auth else []
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
            with dashboard.schema_cache(con):
                return fn(con)

    @app.exception_handler(NeurocyteError)
    async def neurocyte_error(_request: Request, exc: NeurocyteError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status_for(exc))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/{page}.html", include_in_schema=False)
    def page(page: str) -> HTMLResponse:
        if page not in PAGES:
            raise HTTPException(404, f"no page {page!r}")
        shell = (STATIC_DIR / "page.html").read_text(encoding="utf-8")
        return HTMLResponse(shell.replace("{page}", page), headers={"Cache-Control": "no-cache"})

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
        try:  # a NUL byte or an overlong name is a malformed path: not found, not a 500
            target = (root / (path or "index.html")).resolve()
            if not target.is_relative_to(root):
                raise HTTPException(404, "not found")
            if target.is_dir():
                target = target / "index.html"
            found = target.is_file()
        except (ValueError, OSError):
            raise HTTPException(404, "not found") from None
        if not found:
            raise HTTPException(404, f"no Data Docs page {path[:200]!r}")
        return FileResponse(target)

    @app.get("/releases/{name}/{path:path}", include_in_schema=False, dependencies=guards)
    def release_download(name: str, path: str) -> FileResponse:
        from transforms.serve.release import release_file

        try:
            target = release_file(name, path, lake=lake_root())
        except NeurocyteError as exc:
            raise HTTPException(404, str(exc)) from exc
        return FileResponse(target, filename=target.name)

    @api.get("/releases")
    def releases() -> dict[str, Any]:
        from transforms.serve.release import list_releases

        return {"available": True, "releases": list_releases(lake=lake_root())}

    @app.get("/qc-report", include_in_schema=False, dependencies=guards)
    def qc_report_root() -> RedirectResponse:
        return RedirectResponse("qc-report/")

    @app.get("/qc-report/", include_in_schema=False, dependencies=guards)
    def qc_report_index() -> HTMLResponse:
        from transforms.serve import qc_report

        with catalog() as con:
            if con is None:
                raise HTTPException(404, "no catalog yet")
            return HTMLResponse(qc_report.index(con))

    @app.get("/qc-report/{file_id}", include_in_schema=False, dependencies=guards)
    def qc_report_file(file_id: str) -> HTMLResponse:
        from transforms.serve import qc_report

        with catalog() as con:
            if con is None:
                raise HTTPException(404, "no catalog yet")
            return HTMLResponse(qc_report.file_report(con, file_id, lake=lake_root()))

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
            sweeps = dashboard.example_sweeps(con, file_id, lake=lake_root(), max_points=max_points)
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

    @api.get("/search")
    def search(
        kind: Annotated[list[str] | None, Query()] = None,
        lab: Annotated[list[str] | None, Query()] = None,
        condition: Annotated[list[str] | None, Query()] = None,
        timepoint: Annotated[list[str] | None, Query()] = None,
        subject: Annotated[list[str] | None, Query()] = None,
        species: Annotated[list[str] | None, Query()] = None,
        protocol: Annotated[list[str] | None, Query()] = None,
        qc_status: Annotated[list[str] | None, Query()] = None,
        date_from: str | None = None,
        date_to: str | None = None,
        q: str | None = None,
    ) -> dict[str, Any]:
        filters = {
            "kind": kind or [],
            "lab": lab or [],
            "condition": condition or [],
            "timepoint": timepoint or [],
            "subject": subject or [],
            "species": species or [],
            "protocol": protocol or [],
            "qc_status": qc_status or [],
        }
        return run(
            lambda con: dashboard.search(
                con, filters=filters, date_from=date_from, date_to=date_to, text=q
            ),
            {"results": [], "facets": {}},
        )

    @api.get("/cells/{file_id}")
    def cell_page(file_id: str) -> dict[str, Any]:
        return run(lambda con: dashboard.cell_page(con, file_id, lake=lake_root()), {})

    @api.get("/cells/{file_id}/sweeps/{sweep}")
    def sweep_detail(
        file_id: str, sweep: int, max_points: Annotated[int, Query(ge=100, le=50_000)] = 4000
    ) -> dict[str, Any]:
        return run(
            lambda con: dashboard.sweep_detail(
                con, file_id, sweep, lake=lake_root(), max_points=max_points
            ),
            {},
        )

    @api.get("/plates/{file_id}")
    def plate_page(file_id: str) -> dict[str, Any]:
        return run(lambda con: dashboard.plate_page(con, file_id, lake=lake_root()), {})

    @api.get("/plates/{file_id}/network-bursts")
    def network_bursts(
        file_id: str,
        well: str | None = None,
        start_s: float | None = None,
        stop_s: float | None = None,
    ) -> dict[str, Any]:
        return run(
            lambda con: dashboard.network_bursts(
                con, file_id, well=well, start_s=start_s, stop_s=stop_s
            ),
            {"bursts": []},
        )

    @api.get("/plates/{file_id}/by-div")
    def by_div(file_id: str, metric: str = "mean_firing_rate_hz") -> dict[str, Any]:
        return run(
            lambda con: dashboard.well_metric_by_div(con, file_id, metric=metric),
            {"timepoints": [], "wells": []},
        )

    def require_curator(user: Any) -> None:
        if not is_curator(user):
            raise HTTPException(
                403,
                f"this needs the curator role (Airflow roles {sorted(curator_roles())}); "
                f"{user.get_name()} has {list(user_roles(user)) or 'none'}",
            )

    def landing_root() -> str:
        return spec.landing_root(landing)

    def upload_state(session: dict[str, Any]) -> dict[str, Any]:
        """The session plus where its file is in the pipeline (from ingest_log)."""
        out = {k: v for k, v in session.items() if k not in ("user", "s3_upload_id")}
        out["stage"] = "uploading"
        if not session["done"]:
            return out
        if spec.recording_kind(session["file_name"]) is None:
            out["stage"] = "landed: plate map (read with the recordings beside it)"
            return out
        out["stage"] = "landed: waiting for the ingest DAG"
        with catalog() as con:
            attempt = None if con is None else dashboard.latest_attempt(con, session["file_id"])
        if attempt is not None:
            out["stage"] = attempt["status"]
            out["reason"] = attempt["reason"]
        return out

    @api.post("/uploads", status_code=201)
    def upload_start(
        body: UploadRequest,
        user: Any = Depends(get_user),  # noqa: B008
    ) -> dict[str, Any]:
        """Open a resumable upload (curator role); send its bytes with PUT."""
        from transforms.serve import upload

        require_curator(user)
        return upload.start(
            landing_root(),
            file_name=body.file_name,
            size_bytes=body.size_bytes,
            lab=body.lab,
            condition=body.condition,
            timepoint=body.timepoint,
            sidecar=dict(body.sidecar),
            user=user.get_name(),
        )

    @api.get("/uploads/{upload_id}")
    def upload_status(upload_id: str) -> dict[str, Any]:
        """Bytes received (where to resume) and the file's stage in the pipeline."""
        from transforms.serve import upload

        return upload_state(upload.status(landing_root(), upload_id))

    @api.put("/uploads/{upload_id}")
    async def upload_chunk(
        upload_id: str,
        offset: int,
        request: Request,
        user: Any = Depends(get_user),  # noqa: B008
    ) -> dict[str, Any]:
        """Bytes of the request body written at ``offset``, streamed to disk chunk by
        chunk (409 with the received size when ``offset`` is not where it ends)."""
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import ClientDisconnect

        from transforms.serve import upload

        require_curator(user)
        try:
            writer = await run_in_threadpool(
                functools.partial(upload.open_chunk, landing_root(), upload_id, offset=offset)
            )
        except upload.UploadConflict:
            state = await run_in_threadpool(upload.status, landing_root(), upload_id)
            if state["done"] and offset == state["size_bytes"]:
                return await run_in_threadpool(upload_state, state)
            raise HTTPException(
                409, {"detail": "resume at received_bytes", **upload_state(state)}
            ) from None
        try:
            async for chunk in request.stream():
                if chunk:
                    await run_in_threadpool(writer.write, chunk)
        except ClientDisconnect:  # the client resumes at received_bytes: local files keep
            await run_in_threadpool(writer.abort)  # what arrived, an S3 part is dropped whole
            log.info("upload %s: connection dropped mid-chunk", upload_id)
            raise HTTPException(400, "connection dropped: resume at received_bytes") from None
        except BaseException:
            await run_in_threadpool(writer.abort)
            raise
        state = await run_in_threadpool(writer.close)
        return await run_in_threadpool(upload_state, state)

    @api.delete("/uploads/{upload_id}", status_code=204)
    def upload_abort(
        upload_id: str,
        user: Any = Depends(get_user),  # noqa: B008
    ) -> Response:
        """Drop an unfinished upload and its bytes (a landed file is left alone)."""
        from transforms.serve import upload

        require_curator(user)
        upload.abort(landing_root(), upload_id)
        return Response(status_code=204)

    @api.get("/curation")
    def curation(file_id: str | None = None) -> dict[str, Any]:
        return run(lambda con: dashboard.curation_log(con, file_id=file_id), {"actions": []})

    @api.get("/excluded")
    def excluded() -> dict[str, Any]:
        return run(dashboard.excluded, {"excluded": []})

    @api.get("/me")
    def me(user: Any = Depends(get_user)) -> dict[str, Any]:  # noqa: B008
        return {
            "user": user.get_name(),
            "roles": list(user_roles(user)),
            "curator": is_curator(user),
        }

    @api.post("/curation", status_code=201)
    def curate(
        body: CurationRequest,
        user: Any = Depends(get_user),  # noqa: B008  (a local: Annotated cannot name it)
    ) -> dict[str, Any]:
        """Append one curator action to ``curation_log`` and republish the catalog."""
        from transforms.lake import catalog as lake_catalog
        from transforms.lake import curation

        require_curator(user)
        action = curation.CurationAction(
            action=body.action,
            target_kind=body.target_kind,
            file_id=body.file_id,
            reason=body.reason,
            well=body.well,
            sweep_number=body.sweep_number,
        )
        with catalog() as con:
            if con is None:
                raise HTTPException(409, "no catalog yet: nothing to curate")
            problem = dashboard.check_curation_target(
                con,
                action=action.action,
                file_id=action.file_id,
                well=action.well,
                sweep_number=action.sweep_number,
            )
        if problem:
            raise HTTPException(404, problem)
        # One publish at a time in this process: publish writes <catalog>.<pid>.tmp.
        with _PUBLISH_LOCK:
            row = curation.record(
                action, curator=user.get_name(), curator_roles=user_roles(user), lake=lake_root()
            )
            if action.action == "accept_quarantined":
                from transforms.pipeline.accept import publish_quarantined

                try:
                    publish_quarantined(
                        action.file_id, curator=user.get_name(), why=action.reason, lake=lake_root()
                    )
                except NeurocyteError as exc:  # the log says the acceptance did not go through
                    curation.record(
                        curation.CurationAction(
                            action="note",
                            target_kind="recording",
                            file_id=action.file_id,
                            reason=f"accepting failed: {exc}",
                        ),
                        curator=user.get_name(),
                        curator_roles=user_roles(user),
                        lake=lake_root(),
                    )
                    raise
            lake_catalog.publish(lake=lake_root())
        return {"recorded": row}

    @api.get("/download/{view}.{fmt}", response_model=None)
    def download(
        view: str,
        fmt: Literal["csv", "parquet"],
        file_id: Annotated[list[str] | None, Query()] = None,
        lab: Annotated[list[str] | None, Query()] = None,
        condition: Annotated[list[str] | None, Query()] = None,
        timepoint: Annotated[list[str] | None, Query()] = None,
        subject: Annotated[list[str] | None, Query()] = None,
        species: Annotated[list[str] | None, Query()] = None,
        protocol: Annotated[list[str] | None, Query()] = None,
        well: Annotated[list[str] | None, Query()] = None,
    ) -> StreamingResponse:
        """A view filtered by facets, streamed in record batches (never whole in memory)."""
        from transforms.serve import downloads

        filters = {
            "file_id": file_id or [],
            "lab": lab or [],
            "condition": condition or [],
            "timepoint": timepoint or [],
            "subject": subject or [],
            "species": species or [],
            "protocol": protocol or [],
            "well": well or [],
        }
        con = dashboard.open_catalog(lake_root())
        if con is None:
            raise HTTPException(404, "no catalog yet")
        try:
            chunks = downloads.stream(con, view, filters, fmt=fmt)
        except BaseException:
            con.close()
            raise

        def body() -> Iterator[bytes]:
            try:
                yield from chunks
            finally:
                con.close()

        media = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
        return StreamingResponse(
            body(),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{view}.{fmt}"'},
        )

    @api.get("/download/nwb/{file_id}", response_model=None)
    def download_nwb(file_id: str) -> FileResponse:
        """A published patch-clamp recording with its metadata and features as NWB."""
        import tempfile

        from starlette.background import BackgroundTask

        from transforms.serve.export import export_recording_nwb

        spec.check_file_id(file_id)
        tmp = Path(tempfile.mkdtemp(prefix="neurocyte-nwb-"))
        out = tmp / f"{file_id[:12]}.nwb"
        try:
            export_recording_nwb(file_id, out, lake=lake_root())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FileResponse(
            out,
            media_type="application/x-nwb",
            filename=out.name,
            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True),
        )

    @api.get("/download/original/{file_id}", response_model=None)
    def download_original(file_id: str) -> FileResponse:
        """The source file as it was ingested (checked against its file_id first)."""
        from transforms.serve.raw import locate, verify_source

        record = locate(file_id, lake=lake_root())
        verify_source(record)
        return FileResponse(record.source_path, filename=record.source_path.name)

    @api.get("/raw/{file_id}", response_model=None)
    def raw(
        file_id: str,
        start_s: float,
        stop_s: float,
        well: Annotated[list[str] | None, Query()] = None,
        electrode: Annotated[list[str] | None, Query()] = None,
        sweep: int | None = None,
        format: Literal["json", "npy", "nwb"] = "json",
        max_points: Annotated[int, Query(ge=2, le=RAW_JSON_MAX_POINTS)] = 2000,
    ) -> Response | dict[str, Any]:
        """A raw window: ``.npy`` bytes (float32, samples × channels; time base and units in
        the X-Neurocyte-Snippet header), NWB (the window with its time base and units) or
        decimated JSON."""
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
        if format == "nwb":  # the window with its time base and units, as NWB
            import tempfile

            from starlette.background import BackgroundTask

            tmp = Path(tempfile.mkdtemp(prefix="neurocyte-raw-"))
            try:
                out = snip.save(tmp / f"{file_id[:12]}_snippet.nwb")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return FileResponse(
                out,
                media_type="application/x-nwb",
                filename=out.name,
                headers={"X-Neurocyte-Snippet": json.dumps(meta)},
                background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True),
            )
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
