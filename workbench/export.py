"""Export an executed notebook to a self-contained HTML page.

Executed notebooks keep figures as small plotly JSON outputs, which JupyterLab
renders but a plain HTML export would show as text. This exporter turns each
plotly output into an HTML div, with plotly.js embedded once, so the page
works offline in any browser:

    python -m workbench.export runs/01_quickstart.ipynb   # writes runs/01_quickstart.html
"""
from __future__ import annotations

import argparse
import json
import copy
import sys
from pathlib import Path

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _plotly_to_html(nb) -> object:
    import plotly.io as pio

    nb = copy.deepcopy(nb)
    first = True
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            spec = out.get("data", {}).get(PLOTLY_MIME)
            if spec is None:
                continue
            fig = pio.from_json(json.dumps(spec), skip_invalid=True)
            out["data"]["text/html"] = pio.to_html(fig, include_plotlyjs=True if first else False, full_html=False)
            del out["data"][PLOTLY_MIME]
            first = False
    return nb


def export_html(notebook: str | Path, out: str | Path | None = None) -> Path:
    """Write `out` (default: the notebook's path with .html) and return it."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    out = Path(out) if out is not None else notebook.with_suffix(".html")
    nb = _plotly_to_html(nbformat.read(notebook, as_version=4))
    body, _ = HTMLExporter().from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m workbench.export", description=__doc__.splitlines()[0])
    p.add_argument("notebook")
    p.add_argument("--out")
    a = p.parse_args(argv)
    if not Path(a.notebook).is_file():
        print(f"error: notebook {a.notebook!r} not found", file=sys.stderr)
        return 2
    print(export_html(a.notebook, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
