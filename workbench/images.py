"""Static images of figures, PNG, SVG or PDF, through kaleido (which drives a Chrome or Chromium; Debian's works).

    from workbench import images
    images.save(fig, "curves.png")                  # the format follows the suffix: .png .svg .pdf
    png = images.to_image(fig, "png")               # bytes
    with images.image_server():                     # many figures: one browser for all (~0.3 s each after ~5 s)
        for name, fig in widget.figures().items():
            images.save(fig, f"{name}.svg")

Where plotly JSON cannot render (GitHub and VS Code previews, PDF, e-mail), these images can:
``python -m workbench.export`` uses them for the HTML page and, with ``--notebook``, adds a PNG next to each
figure of an executed notebook. kaleido never downloads a browser here (``kaleido.get_chrome`` is not called);
without one, ``ImageError`` says how to install Debian's.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import plotly.graph_objects as go

FORMATS = ("png", "svg", "pdf")
#: the width of an image when the figure sets none (plotly's own default is 700 px)
WIDTH = 960
_server_running = False


class ImageError(RuntimeError):
    """A figure could not be turned into an image (no kaleido, no browser, an unknown format)."""


def unavailable() -> str | None:
    """Why images cannot be made here, or None when they can (kaleido importable, a Chromium or Chrome found)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install kaleido; it is in pyproject.toml's dependencies)"
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")):
        return ("kaleido needs a Chrome or Chromium and none is on PATH: apt-get install -y chromium "
                "(Debian's works; `make test` installs it when run as root)")
    return None


def _check_format(fmt: str) -> str:
    f = str(fmt).lower().lstrip(".")
    if f not in FORMATS:
        raise ImageError(f"image format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return f


@contextmanager
def image_server():
    """One browser for every image made inside the block (the first image takes seconds, the rest ~0.3 s)."""
    global _server_running
    why = unavailable()
    if why:
        raise ImageError(why)
    import kaleido

    if _server_running:  # nested: the outer block owns the server
        yield
        return
    kaleido.start_sync_server(silence_warnings=True)
    _server_running = True
    try:
        yield
    finally:
        _server_running = False
        kaleido.stop_sync_server(silence_warnings=True)


def to_image(fig: go.Figure, format: str = "png", width: int | None = None, height: int | None = None,
             scale: float | None = None) -> bytes:
    """The image of ``fig`` as bytes (``format``: png, svg or pdf); ``width`` defaults to the figure's or
    ``WIDTH``, ``height`` to the figure's, ``scale`` 2 for PNG (sharp on high-density screens and projectors)."""
    import warnings

    import plotly.io as pio

    fmt = _check_format(format)
    why = unavailable()
    if why:
        raise ImageError(why)
    fig = go.Figure(fig)
    width = width or fig.layout.width or WIDTH
    scale = scale if scale is not None else (2 if fmt == "png" else 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "kopts is ignored if using a server"
            return pio.to_image(fig, format=fmt, width=width, height=height or fig.layout.height, scale=scale)
    except Exception as e:  # kaleido / choreographer errors have many types
        raise ImageError(f"kaleido could not draw the figure as {fmt}: {type(e).__name__}: {e}") from e


def save(fig: go.Figure, path: str | Path, **kw) -> Path:
    """Write ``fig`` to ``path`` in the format its suffix names (.png, .svg, .pdf); returns the path."""
    path = Path(path)
    data = to_image(fig, _check_format(path.suffix or "png"), **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


__all__ = ["FORMATS", "ImageError", "unavailable", "image_server", "to_image", "save"]
