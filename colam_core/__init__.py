"""colam_core: COLAM (Li, Xiong, An, Xu, Dou 2022) and the label-softening baselines it is compared with.

    from colam_core import Config, Trainer, load_run, train
    summary = train(dataset="digits", method="colam", epochs=12, stages=4, T=1.5, out="runs/demo")
    run = load_run("runs/demo"); run.soft_labels(1)

Never imports workbench, ipywidgets or plotly. The names below load on first use (PEP 562), so importing a light
module (`colam_core.metrics`, `colam_core.errors`) does not import torch.
"""
import importlib

__version__ = "0.2.0"  # the one version source (pyproject.toml reads it)

_EXPORTS = {
    "Config": "config", "ConfigError": "errors", "RunError": "errors", "TrainingError": "errors",
    "Run": "runs", "load_run": "runs", "Trainer": "training", "train": "training", "pick_device": "training",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'colam_core' has no attribute {name!r}")


__all__ = list(_EXPORTS)
