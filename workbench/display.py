"""Interactive or static: the one switch that decides how the workbench shows itself.

* ``"interactive"``: widgets show ipywidgets controls and live
  ``go.FigureWidget`` views; long work (training) runs on a worker thread.
* ``"static"``: no front end is listening (papermill, nbconvert, scripts,
  tests). Widgets show plain plotly figures of their current state, as small
  ``application/vnd.plotly.v1+json`` outputs (no widget state, no embedded
  plotly.js), and training runs synchronously.

``display_mode()`` decides, in this order: the value given to
``set_display_mode`` (until reset with ``set_display_mode(None)``); the
environment variable ``COLAM_WORKBENCH_MODE`` (``interactive``, ``static`` or
``auto``); auto-detection. Auto-detection says "interactive" only inside an
IPython kernel that a Jupyter Server (JupyterLab, Notebook 7) started for a
notebook session: the server sets ``JPY_SESSION_NAME`` in the environment of
such kernels, papermill / nbclient do not. A kernel that papermill starts from
inside a JupyterLab kernel inherits that variable; it is told apart because
the process that launched it (``JPY_PARENT_PID``, Linux ``/proc``) carries
the same value, while a Jupyter Server does not carry it at all. Front ends
that start kernels themselves (VS Code, Colab) auto-detect as static: set
``COLAM_WORKBENCH_MODE=interactive`` there.
"""
from __future__ import annotations

import json
import os
from typing import Any

import plotly.graph_objects as go

from colam_core.progress import started_by_jupyter_server

MODES = ("interactive", "static")
ENV_VAR = "COLAM_WORKBENCH_MODE"
_override: str | None = None


def _check(mode: str) -> str:
    m = str(mode).strip().lower()
    if m not in MODES:
        raise ValueError(f"display mode must be 'interactive' or 'static' (or None / 'auto' to detect); got {mode!r}")
    return m


def set_display_mode(mode: str | None) -> None:
    """Force ``"interactive"`` or ``"static"`` for widgets created from now on; ``None`` or ``"auto"`` resets."""
    global _override
    _override = None if mode is None or str(mode).strip().lower() == "auto" else _check(mode)


def display_mode() -> str:
    """``"interactive"`` or ``"static"``: see the module docstring for how it is decided."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env and env != "auto":
        try:
            return _check(env)
        except ValueError:
            raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: must be interactive, static or auto") from None
    return "interactive" if started_by_jupyter_server() else "static"


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    """The mime bundle of a static figure: plotly JSON (arrays as compact typed arrays) and a text line.

    JupyterLab (with plotly's extension) renders it; no plotly.js, widget
    state or image is embedded, so an executed notebook stays small.
    """
    spec = json.loads(fig.to_json())
    spec.setdefault("config", {"displaylogo": False})
    title = fig.layout.title.text or ", ".join(sorted({t.type for t in fig.data})) or "figure"
    return {"application/vnd.plotly.v1+json": spec, "text/plain": f"<plotly figure: {title}>"}


def show(*items: Any) -> None:
    """Display each item in order: plotly figures as small plotly JSON (``figure_bundle``), anything else
    (a widget, a DataFrame, HTML) as IPython would. The figure stays small in both display modes; JupyterLab
    renders it with plotly's extension."""
    from IPython.display import display

    for item in items:
        if isinstance(item, go.Figure):
            display(figure_bundle(item), raw=True)
        else:
            display(item)
