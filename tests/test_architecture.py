"""The package layout holds: layers (import-linter), no private name crossing a module."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SOURCES = ("transforms", "dags", "plugins")


def _modules() -> dict[Path, str]:
    out = {}
    for root in SOURCES:
        for path in (REPO_ROOT / root).rglob("*.py"):
            rel = path.relative_to(REPO_ROOT / root if root != "transforms" else REPO_ROOT)
            out[path] = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
    return out


def _project_module(name: str, known: set[str]) -> bool:
    return any(name == k or name.startswith(k + ".") for k in known)


def test_layers_contract_is_kept() -> None:
    """import-linter's contracts in pyproject.toml (layers; no Airflow in transforms)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "dags"), str(REPO_ROOT)])}
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_private_name_crosses_a_module() -> None:
    """``from m import _x`` and ``m._x`` on another project module are both refused."""
    modules = _modules()
    known = {"transforms", "neurocyte_tasks"}
    problems: list[str] = []
    for path, name in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not _project_module(node.module, known):
                    continue
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    is_module = any(m == target for m in modules.values())
                    if is_module:
                        aliases.add(a.asname or a.name)
                    elif a.name.startswith("_") and node.module != name:
                        problems.append(f"{path.relative_to(REPO_ROOT)}: imports {target}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if _project_module(a.name, known):
                        aliases.add(a.asname or a.name.split(".")[0])
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno}: uses {node.value.id}.{node.attr}"
                )
    assert not problems, "\n".join(problems)
