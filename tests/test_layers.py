"""The house plan's import rules hold: the import-linter contracts of pyproject.toml
(``[tool.importlinter]``: entry points > ui > state > analysis | demo > processing > hdf5 >
storage > config > errors; Panel, HoloViews, Bokeh, Datashader only in ui/ and the entry points;
no cycle between the modules of a package), and a worker-side import pulls in no UI library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

UI_LIBRARIES = ("bokeh", "datashader", "holoviews", "panel")


def test_import_linter_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's dashboard, not an install
    result = subprocess.run([str(lint_imports), "--no-cache"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


def test_worker_side_import_pulls_in_no_ui():
    # A Dask worker or the CLI's process command imports these; Panel must stay out.
    code = (
        "import sys, dashboard, dashboard.storage.s3, dashboard.config;"
        "import dashboard.processing.batch, dashboard.processing.cluster, dashboard.hdf5.stack;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{list(UI_LIBRARIES)!r});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=env)
    assert result.returncode == 0, result.stdout + result.stderr
