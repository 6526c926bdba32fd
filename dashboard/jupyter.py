"""JupyterHub / JupyterLab launcher entry for the dashboard (via ``jupyter-server-proxy``).

Registered in ``pyproject.toml`` as::

    [project.entry-points.jupyter_serverproxy_servers]
    echo-s3-viewer = "dashboard.jupyter:setup_panel_proxy"

With ``jupyter-server-proxy`` installed in the single-user image, the hub's launcher shows
"ECHO S3 Viewer"; it opens ``<base_url>echo-s3-viewer/`` behind the hub's own login. Panel
listens on 127.0.0.1 only; the proxy forwards to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "echo-s3-viewer"
TITLE = "ECHO S3 Viewer"


def setup_panel_proxy() -> dict:
    """The ``jupyter-server-proxy`` server specification (like ``jupyter-panel-proxy``'s).

    ``{port}`` and ``{base_url}`` are filled in by jupyter-server-proxy. Websocket origins
    are not restricted here (``*``) because the server listens on loopback only and every
    request has already passed the hub's authentication in the proxy; the browser's origin is
    the hub's host, which the single-user server cannot know in advance.
    """
    app = Path(__file__).resolve().with_name("app.py")
    return {
        "command": [
            sys.executable, "-m", "panel", "serve", str(app),
            "--address", "127.0.0.1",
            "--port", "{port}",
            "--allow-websocket-origin", "*",
            "--prefix", "{base_url}" + NAME,
        ],
        "absolute_url": True,
        "timeout": 120,
        "launcher_entry": {"enabled": True, "title": TITLE},
    }
