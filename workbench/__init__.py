"""Interactive widgets and plotly figures for COLAM runs (imports colam_core, never the reverse).

    from colam_core import Config
    from workbench import StageStepper, SoftLabelExplorer, RepresentationExplorer, RunComparison

    stepper = StageStepper(Config(dataset="digits", epochs=12, stages=4), out="runs/demo")
    stepper.run_all()            # JupyterLab: buttons, progress, live curves and soft labels while it
                                 # trains on a thread; papermill: trains here, then shows the final figures
    SoftLabelExplorer("runs/demo")
    RepresentationExplorer("runs/demo", classes=(3, 5, 8))
    RunComparison({"HL": "runs/hl", "LS": "runs/ls", "COLAM": "runs/demo"})

Every widget has ``.figures()`` (``{name: go.Figure}`` of its current state).
``show(fig, ...)`` displays figures as small plotly JSON in either mode.
``display_mode()`` says whether widgets are "interactive" (JupyterLab) or
"static" (papermill, scripts); ``set_display_mode(...)`` or the environment
variable ``COLAM_WORKBENCH_MODE`` override it (see ``workbench.display``).
``workbench.figures`` holds the figure functions the widgets are built from.
"""
from . import figures
from .display import display_mode, set_display_mode, show
from .widgets import RepresentationExplorer, RunComparison, SoftLabelExplorer, StageStepper

__all__ = ["StageStepper", "SoftLabelExplorer", "RepresentationExplorer", "RunComparison", "figures", "show",
           "display_mode", "set_display_mode"]
