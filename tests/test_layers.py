"""The house plan's import rules hold: UI libraries only in ui/ (and the app/cli entry points)."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

UI_LIBRARIES = {"panel", "holoviews", "bokeh", "datashader"}
UI_ALLOWED = ("ui/", "app.py", "cli.py", "__main__.py", "jupyter.py")
# Which of our packages each layer may import (imports point downward only).
ALLOWED = {
    "storage": {"storage", "config", "errors"},
    "hdf5": {"hdf5", "storage", "config", "errors"},
    "processing": {"processing", "hdf5", "storage", "config", "errors"},
    "demo": {"demo", "storage", "config", "errors"},
    "analysis": {"analysis", "processing", "hdf5", "storage", "config", "errors"},
    "state": {"state", "analysis", "processing", "hdf5", "storage", "demo", "config", "errors"},
}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


def _sources():
    package = ROOT / "dashboard"
    for path in sorted(package.rglob("*.py")):
        yield path.relative_to(package).as_posix(), path


def test_no_ui_library_below_ui():
    offenders = []
    for rel, path in _sources():
        if rel.startswith(UI_ALLOWED):
            continue
        for module, level in _imports(path):
            if level == 0 and module.split(".")[0] in UI_LIBRARIES:
                offenders.append(f"{rel} imports {module}")
    assert not offenders, offenders


def test_imports_point_downward():
    offenders = []
    for rel, path in _sources():
        layer = rel.split("/")[0]
        if layer not in ALLOWED:
            continue
        for module, level in _imports(path):
            if level == 0 and module.startswith("dashboard."):
                target = module.split(".")[1]
            elif level == 2:  # from ..x import y, seen from dashboard/<layer>/mod.py
                target = module.split(".")[0] if module else layer
            elif level == 3:
                target = module.split(".")[0]
            else:
                continue
            if target and target not in ALLOWED[layer]:
                offenders.append(f"{rel} imports dashboard.{target}")
    assert not offenders, offenders


def test_worker_side_import_pulls_in_no_ui():
    # A Dask worker or the CLI's process command imports these; Panel must stay out.
    code = (
        "import sys, dashboard, dashboard.storage.s3, dashboard.config;"
        "import importlib.util as u;"
        "[__import__(m) for m in ('dashboard.processing.pipeline', 'dashboard.hdf5.stack')"
        " if u.find_spec(m)];"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(UI_LIBRARIES)!r});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
