"""Releases: a frozen, curated selection of the lake that opens anywhere and reproduces.

``neurocyte release NAME --where "lab = 'x' AND timepoint = 'DIV14'"`` writes
``<lake>/releases/<NAME>/``:

* ``tables/<table>.parquet``: the selected recordings' rows of every table, exactly
  as the views show them (the latest published attempt of each file; quarantined,
  failed and superseded attempts are never included), rows in a canonical order;
* ``catalog.duckdb``: a self-contained DuckDB catalog of views over those files,
  named relative to the catalog (it opens wherever the release is copied);
* ``dandiset/sub-<subject>/sub-<subject>_ses-<session>_<modality>.nwb``: each
  recording as NWB (patch clamp: ``icephys``, its subject or cell; MEA plates:
  ``ecephys``, the lab), session = the first 12 hex digits of its file_id;
* ``manifest.json``: the name, the selection (``where`` and the file_ids it chose),
  the Delta version of every table it was read from, the curation state honoured,
  and the SHA-256 and size of every file.

The rows are read from the tables at their recorded Delta versions (time travel), so
:func:`reproduce_release` rebuilds the Parquet files bit for bit later (the NWB files
are checksummed too, but carry their creation time, so only the tables are
reproducible byte for byte), after any
number of new ingests, as long as vacuum has not removed those versions' files
(the nightly vacuum keeps 7 days of history; a release meant to outlive that is
its own copy).

``where`` is a DuckDB boolean expression over ``file_id``, ``file_name``,
``transform_version``, ``lab``, ``condition``, ``timepoint`` and ``timepoint_days``
(one row per recording and condition). It is the analyst's own SQL, evaluated on an
in-memory connection that can read nothing but the lake's tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from transforms import spec
from transforms.errors import LakeError, SpecError

if TYPE_CHECKING:
    import pyarrow as pa
    from duckdb import DuckDBPyConnection

    from transforms.lake.catalog import TableSnapshot

RELEASES_DIR: Final = "releases"
MANIFEST: Final = "manifest.json"
#: What a release honours: only each file's latest published attempt.
CURATION: Final = {"status": "published", "attempt": "latest published attempt per file_id"}


@dataclass(frozen=True)
class Release:
    """A written release: its directory and manifest."""

    path: Path
    manifest: dict[str, Any]


def release_dir(name: str, *, lake: str | None = None) -> Path:
    """``<lake>/releases/<name>`` (a local lake; ``name`` as a partition value).

    Raises
    ------
    SpecError
        A name that is not 1-64 letters, digits, ``.``, ``_``, ``-``.
    LakeError
        An ``s3://`` lake.
    """
    spec.validate_partition_value("lab", name, source="release name")
    root = spec.lake_root(lake)
    if spec.is_remote(root):
        raise LakeError(f"releases are written from a local lake only, not {root}")
    return Path(root) / RELEASES_DIR / name


def _snapshot_at(table: str, version: int, *, lake: str | None) -> TableSnapshot:
    from deltalake import DeltaTable

    from transforms.lake import delta as lakeio
    from transforms.lake.catalog import TableSnapshot

    if version < 0:
        return TableSnapshot(-1, (), ())
    try:
        dt = DeltaTable(
            spec.table_uri(table, lake),
            version=version,
            storage_options=lakeio.storage_options(lake),
        )
    except Exception as exc:  # deltalake raises its own types for missing versions
        raise LakeError(
            f"{table} version {version} cannot be read (vacuumed? the nightly vacuum keeps "
            f"7 days): {exc}"
        ) from exc
    cols = tuple(f.name for f in dt.schema().fields) if table == spec.INGEST_LOG else ()
    return TableSnapshot(version, tuple(dt.file_uris()), cols)


def _views_at(versions: dict[str, int], *, lake: str | None) -> DuckDBPyConnection:
    """An in-memory connection with the catalog's views over the tables at ``versions``."""
    import duckdb

    from transforms.lake.catalog import VIEW_ORDER, render_view

    cut = {t: _snapshot_at(t, v, lake=lake) for t, v in versions.items()}
    con = duckdb.connect()
    for name in VIEW_ORDER:
        con.execute(render_view(name, cut))
    tables = str(Path(spec.lake_root(lake)) / "tables") + "/"
    con.execute("SET allowed_directories = [?]", [tables])
    con.execute("SET enable_external_access = false")
    return con


def _has_rows(con: DuckDBPyConnection, view: str) -> bool:
    cols = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [view]
    ).fetchall()
    return "lab" in {c[0] for c in cols}


def _select(con: DuckDBPyConnection, where: str) -> list[str]:
    if ";" in where or not where.strip():
        raise SpecError(f"--where must be one boolean expression, got {where!r}")
    parts = [
        f"SELECT file_id, lab, condition, timepoint, timepoint_days FROM {t}"  # noqa: S608
        for t in spec.DATA_TABLES
        if _has_rows(con, t)
    ]
    if not parts:
        return []
    recordings = " UNION ".join(parts)
    sql = (
        f"SELECT DISTINCT r.file_id FROM ({recordings}) r "  # noqa: S608  (the analyst's own)
        "JOIN (SELECT file_id, file_name, transform_version FROM published) p USING (file_id) "
        f"WHERE ({where}) ORDER BY 1"
    )
    import duckdb

    try:
        rows = con.execute(sql).fetchall()
    except duckdb.Error as exc:
        raise SpecError(f"--where {where!r}: {exc}") from exc
    return [r[0] for r in rows]


def _write_tables(con: DuckDBPyConnection, file_ids: list[str], out: Path) -> dict[str, int]:
    """One Parquet file per table with rows of ``file_ids``, rows in canonical order."""
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for table in ("published", *spec.DATA_TABLES):
        if table != "published" and not _has_rows(con, table):
            continue
        rows: pa.Table = con.sql(
            f"SELECT * FROM {table} WHERE list_contains($1, file_id) ORDER BY ALL",  # noqa: S608
            params=[file_ids],
        ).to_arrow_table()
        pq.write_table(
            rows.replace_schema_metadata(None), out / f"{table}.parquet", compression="zstd"
        )
        counts[table] = rows.num_rows
    return counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_catalog(path: Path, tables: list[str]) -> None:
    import duckdb

    from transforms.lake.catalog import CATALOG_STORAGE_VERSION, sql_dir

    con = duckdb.connect(
        str(path), config={"storage_compatibility_version": CATALOG_STORAGE_VERSION}
    )
    try:
        con.execute((sql_dir() / "catalog_dir.sql").read_text(encoding="utf-8"))
        con.execute("SET VARIABLE neurocyte_catalog_dir = ?", [str(path.parent.resolve())])
        for table in tables:
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet("  # noqa: S608
                f"neurocyte_catalog_dir() || 'tables/{table}.parquet')"
            )
    finally:
        con.close()


def _dandi_label(text: str) -> str:
    """A BIDS/DANDI entity label: letters and digits and '-' only."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")
    return label or "unknown"


def _write_nwb_tree(
    con: DuckDBPyConnection, file_ids: list[str], out: Path, *, lake: str | None
) -> dict[str, str]:
    """``sub-<subject>/sub-<subject>_ses-<session>_<modality>.nwb`` per recording.

    Patch clamp: the subject column, else the cell; MEA plates: the lab (a culture
    has no subject of its own). A recording whose NWB cannot be written (its source
    is gone) is left out with the reason, which the manifest records.
    """
    from transforms.errors import NeurocyteError
    from transforms.serve.export import export_nwb_any

    skipped: dict[str, str] = {}
    kinds = {}
    for view, modality in (("icephys_recordings", "icephys"), ("mea_recordings", "ecephys")):
        if not _has_rows(con, view):
            continue
        subject_col = "coalesce(subject, cell_id)" if modality == "icephys" else "lab"
        rows = con.execute(
            f"SELECT DISTINCT file_id, {subject_col} FROM {view} "  # noqa: S608  (constants)
            "WHERE list_contains(?, file_id)",
            [file_ids],
        ).fetchall()
        for file_id, subject in rows:
            kinds[file_id] = (modality, _dandi_label(str(subject)))
    for file_id in file_ids:
        modality, subject = kinds[file_id]
        stem = f"sub-{subject}_ses-{file_id[:12]}_{modality}"
        target = out / f"sub-{subject}" / f"{stem}.nwb"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            export_nwb_any(file_id, target, lake=lake)
        except NeurocyteError as exc:
            skipped[file_id] = str(exc)
            target.unlink(missing_ok=True)
    return skipped


def make_release(name: str, *, where: str, lake: str | None = None) -> Release:
    """Freeze the recordings matching ``where`` into ``<lake>/releases/<name>``.

    Raises
    ------
    SpecError
        A bad name or expression, or a selection of no recording.
    LakeError
        A release of that name exists, or the lake is remote.
    """
    from transforms.lake.catalog import consistent_cut

    dest = release_dir(name, lake=lake)
    if dest.exists():
        raise LakeError(f"release {name!r} exists at {dest}: releases are never overwritten")
    versions = {t: s.version for t, s in consistent_cut(lake=lake).items()}
    con = _views_at(versions, lake=lake)
    try:
        file_ids = _select(con, where)
        if not file_ids:
            raise SpecError(f"--where {where!r} selects no published recording")
        tmp = dest.with_name(f".{name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        counts = _write_tables(con, file_ids, tmp / "tables")
        nwb_skipped = _write_nwb_tree(con, file_ids, tmp / "dandiset", lake=lake)
    finally:
        con.close()
    _write_catalog(tmp / spec.CATALOG_FILE, list(counts))
    files = {
        p.relative_to(tmp).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and not p.name.endswith(".wal")
    }
    manifest = {
        "name": name,
        "created_at": datetime.now(UTC).isoformat(),
        "where": where,
        "file_ids": file_ids,
        "delta_versions": versions,
        "curation": CURATION,
        "transform_version": spec.TRANSFORM_VERSION,
        "rows": counts,
        "nwb_skipped": nwb_skipped,
        "files": files,
        "reproducible": sorted(f for f in files if f.startswith("tables/")),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return Release(dest, manifest)


def reproduce_release(
    name: str, *, lake: str | None = None, out: Path | None = None
) -> dict[str, str]:
    """Rebuild a release's tables from its recorded Delta versions; their SHA-256s.

    Raises
    ------
    LakeError
        No such release, a version no longer readable, or a rebuilt file whose
        checksum differs from the manifest's.
    """
    import tempfile

    path = release_dir(name, lake=lake)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise LakeError(f"no release {name!r} at {path}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    versions = {t: int(v) for t, v in manifest["delta_versions"].items()}
    con = _views_at(versions, lake=lake)
    work = out or Path(tempfile.mkdtemp(prefix=f"release-{name}-"))
    try:
        _write_tables(con, list(manifest["file_ids"]), work / "tables")
    finally:
        con.close()
    got = {rel: _sha256(work / rel) for rel in manifest["reproducible"]}
    wrong = [rel for rel, digest in got.items() if digest != manifest["files"][rel]["sha256"]]
    if out is None:
        shutil.rmtree(work, ignore_errors=True)
    if wrong:
        raise LakeError(f"release {name!r} does not reproduce: {', '.join(wrong)} differ")
    return got


def list_releases(*, lake: str | None = None) -> list[dict[str, Any]]:
    """Every release of the lake (newest first): name, creation time, selection, files.

    A folder without a readable manifest (an interrupted release) is left out.
    """
    root = spec.lake_root(lake)
    if spec.is_remote(root):
        return []
    found = []
    for manifest_path in (Path(root) / RELEASES_DIR).glob(f"*/{MANIFEST}"):
        try:
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append(
            {
                "name": m["name"],
                "created_at": m["created_at"],
                "where": m["where"],
                "n_recordings": len(m["file_ids"]),
                "rows": m["rows"],
                "files": [
                    {"path": k, "bytes": v["bytes"], "sha256": v["sha256"]}
                    for k, v in sorted(m["files"].items())
                ]
                + [{"path": MANIFEST, "bytes": manifest_path.stat().st_size, "sha256": ""}],
            }
        )
    return sorted(found, key=lambda r: r["created_at"], reverse=True)


def release_file(name: str, path: str, *, lake: str | None = None) -> Path:
    """A file of a release that its manifest lists (or the manifest itself).

    Raises
    ------
    LakeError
        No such release, or a path the manifest does not list.
    """
    root = release_dir(name, lake=lake)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise LakeError(f"no release {name!r}")
    if path == MANIFEST:
        return manifest_path
    listed = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    if path not in listed:
        raise LakeError(f"release {name!r} has no file {path!r}")
    return root / path
