"""Datasets, batching and augmentation for COLAM experiments (moved from ``colam_core/data.py``).

Step one of splitting the module: the code lives in :mod:`.containers` for now.
"""

from .containers import *  # noqa: F401,F403
from .containers import __all__  # noqa: F401
from .containers import _NATIVE_SIZE  # noqa: F401  (read by colam_core.config)
