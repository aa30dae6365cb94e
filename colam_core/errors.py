"""Every error type the command line turns into one line (exit status 2), in one place.

Each is a plain exception with a message that names the bad value and what is allowed; they are
picklable, so a data-parallel rank can send one to the others. IPython and Jupyter show them as that one line
too (``ConfigError: T: invalid value ...``), not as a traceback through the library.
"""
from __future__ import annotations

from typing import Any


class _OneLine:
    """Shown by IPython (a notebook cell, ``%tb``) as ``Name: message``: the message names what is wrong, and the
    frames inside colam_core tell a notebook's user nothing. ``traceback.print_exception(sys.last_value)`` still
    prints them."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ConfigError(_OneLine, ValueError):
    """A bad option value: names the option, the value and what is allowed."""

    def __init__(self, option: str, value: Any, allowed: str):
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}: invalid value {value!r}; allowed: {allowed}")

    def __reduce__(self):  # picklable (sent between data-parallel ranks)
        return (type(self), (self.option, self.value, self.allowed))


class DataError(_OneLine, ValueError):
    """A problem with a dataset, its files, or the arguments used to load / batch it."""


class RunError(_OneLine, RuntimeError):
    """A run directory that cannot be used as asked (missing, locked, another configuration, corrupt)."""


class TrainingError(_OneLine, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class DistributedError(_OneLine, RuntimeError):
    """Data-parallel training cannot start or go on (bad launch, a rank that cannot see the run directory)."""


#: what the CLI catches and prints as one line
USER_ERRORS = (ConfigError, DataError, RunError, TrainingError, DistributedError)

__all__ = ["ConfigError", "DataError", "RunError", "TrainingError", "DistributedError", "USER_ERRORS"]
