"""Export an executed notebook to a small, self-contained HTML page that works with no network at all.

Executed notebooks keep figures as small plotly JSON outputs, which JupyterLab renders but a plain HTML export,
GitHub, VS Code previews and PDF do not. This exporter draws each figure as an image with kaleido
(``workbench.images``; SVG by default, so text stays sharp and searchable), folds long training logs into a
collapsed block, and leaves out everything nbconvert would fetch from a CDN (require.js, MathJax, the widget
manager, mermaid), so the page opens offline without a console error and weighs hundreds of kB, not MBs:

    python -m workbench.export runs/01_quickstart.ipynb                  # writes runs/01_quickstart.html
    python -m workbench.export runs/01_quickstart.ipynb --images png     # PNG instead of SVG
    python -m workbench.export runs/01_quickstart.ipynb --images interactive   # plotly.js inside (~5 MB), hover
    python -m workbench.export runs/01_quickstart.ipynb --notebook       # also add a PNG beside each figure of
                                                                         # the notebook itself (GitHub shows it)

Without kaleido or a Chromium the page falls back to ``interactive`` and says so on stderr. Markdown math is left
as written (no MathJax offline).
"""
from __future__ import annotations

import argparse
import base64
import copy
import html
import json
import sys
from contextlib import nullcontext
from pathlib import Path

PLOTLY_MIME = "application/vnd.plotly.v1+json"
IMAGE_MODES = ("svg", "png", "interactive")
#: stream outputs (training logs) longer than this many lines are folded into a collapsed <details> block
LOG_LINES = 8
#: the lab template without anything fetched from the network
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<style>
  /* wide tables scroll inside their output instead of being cut off at the page's edge */
  .jp-OutputArea-output { overflow-x: auto; }
  .jp-OutputArea-output img.colam-figure { max-width: 100%; height: auto; }
  details.colam-log > summary { cursor: pointer; color: #555; }
</style>
{% endblock extra_css %}
"""


def _figures(nb):
    """(output, plotly spec) for every plotly output of the notebook, in order."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            spec = out.get("data", {}).get(PLOTLY_MIME)
            if spec is not None:
                yield out, spec


def _fold_logs(nb) -> None:
    """Merge each cell's consecutive stream outputs; fold a merged log longer than LOG_LINES into <details>."""
    import nbformat

    for cell in nb.cells:
        merged, run = [], None
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if run is not None and run["name"] == out["name"]:
                    run["text"] += out["text"]
                    continue
                run = copy.deepcopy(out)
                merged.append(run)
            else:
                run = None
                merged.append(out)
        for i, out in enumerate(merged):
            lines = out.get("text", "").splitlines() if out.get("output_type") == "stream" else []
            if len(lines) > LOG_LINES:
                body = (f"<details class='colam-log'><summary>log: {len(lines)} lines (last: "
                        f"{html.escape(lines[-1][:120])})</summary><pre>{html.escape(chr(10).join(lines))}</pre>"
                        "</details>")
                merged[i] = nbformat.v4.new_output("display_data", data={"text/html": body})
        if "outputs" in cell:
            cell.outputs = merged


def _figure_html(fig, mode: str, first: bool) -> str:
    import plotly.io as pio

    from . import images

    if mode == "interactive":
        return pio.to_html(fig, include_plotlyjs=True if first else False, full_html=False)
    data = images.to_image(fig, mode)
    mime = "image/svg+xml" if mode == "svg" else "image/png"
    alt = html.escape(fig.layout.title.text or "figure", quote=True)
    return f"<img class='colam-figure' alt='{alt}' src='data:{mime};base64,{base64.b64encode(data).decode()}'>"


def _render_figures(nb, mode: str) -> None:
    """Replace every plotly output by HTML: an image (svg / png) or a plotly.js div (interactive)."""
    import plotly.io as pio

    from . import images

    found = list(_figures(nb))
    with (images.image_server() if mode != "interactive" and found else nullcontext()):
        for i, (out, spec) in enumerate(found):
            fig = pio.from_json(json.dumps(spec), skip_invalid=True)
            out["data"]["text/html"] = _figure_html(fig, mode, first=i == 0)
            del out["data"][PLOTLY_MIME]


def _mode(images_mode: str) -> str:
    from . import images

    if images_mode not in IMAGE_MODES:
        raise ValueError(f"images must be one of {', '.join(IMAGE_MODES)}; got {images_mode!r}")
    why = images.unavailable() if images_mode != "interactive" else None
    if why:
        print(f"warning: {why}; the page embeds plotly.js instead (interactive, ~5 MB)", file=sys.stderr)
        return "interactive"
    return images_mode


def export_html(notebook: str | Path, out: str | Path | None = None, images: str = "svg") -> Path:
    """Write ``out`` (default: the notebook's path with .html) and return it; ``images``: svg, png or
    interactive (see the module docstring)."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    out = Path(out) if out is not None else notebook.with_suffix(".html")
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata.pop("widgets", None)  # widget state needs the CDN widget manager; the figures are images
    _fold_logs(nb)
    _render_figures(nb, _mode(images))
    exporter = HTMLExporter(template_name="lab")
    exporter.raw_template = OFFLINE_TEMPLATE
    body, _ = exporter.from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return out


def add_images(notebook: str | Path, out: str | Path | None = None, format: str = "png") -> Path:
    """Add an image (``format`` png or svg) beside the plotly JSON of every figure of an executed notebook, so
    that viewers without plotly (GitHub, VS Code previews, nbconvert to PDF) show it; JupyterLab still shows
    the interactive figure. Writes ``out`` (default: in place) and returns it."""
    import nbformat
    import plotly.io as pio

    from . import images

    notebook = Path(notebook)
    out = Path(out) if out is not None else notebook
    nb = nbformat.read(notebook, as_version=4)
    mime = {"png": "image/png", "svg": "image/svg+xml"}[format]
    found = list(_figures(nb))
    with images.image_server() if found else nullcontext():
        for o, spec in found:
            data = images.to_image(pio.from_json(json.dumps(spec), skip_invalid=True), format)
            o["data"][mime] = base64.b64encode(data).decode() if format == "png" else data.decode()
    nbformat.write(nb, out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m workbench.export", description=__doc__.splitlines()[0])
    p.add_argument("notebook")
    p.add_argument("--out", help="the HTML file to write (default: the notebook's path with .html)")
    p.add_argument("--images", choices=IMAGE_MODES, default="svg", help="how figures appear (default: svg)")
    p.add_argument("--notebook", action="store_true", dest="in_notebook",
                   help="also add a PNG beside each figure of the notebook itself (viewers without plotly)")
    a = p.parse_args(argv)
    if not Path(a.notebook).is_file():
        print(f"error: notebook {a.notebook!r} not found", file=sys.stderr)
        return 2
    if a.in_notebook:
        from .images import ImageError
        try:
            add_images(a.notebook)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(export_html(a.notebook, a.out, images=a.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
