"""colam_core: COLAM (Li, Xiong, An, Xu, Dou 2022) and the label-softening baselines it is compared with.

    from colam_core import Config, Trainer, load_run, train
    summary = train(dataset="digits", method="colam", epochs=12, stages=4, T=1.5, out="runs/demo")
    run = load_run("runs/demo"); run.soft_labels(1)

Never imports workbench, ipywidgets or plotly.
"""
from .config import Config, ConfigError
from .runs import Run, RunError, load_run

__version__ = "0.1.0"


def __getattr__(name):  # the trainer pulls in torch models and data: import it on first use
    if name in ("Trainer", "train", "TrainingError", "pick_device"):
        from . import trainer
        return getattr(trainer, name)
    raise AttributeError(name)


__all__ = ["Config", "ConfigError", "Run", "RunError", "load_run", "Trainer", "train", "TrainingError", "pick_device"]
