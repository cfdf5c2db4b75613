"""Errors a user can act on. Each message names the bad thing and the fix.

The command line prints these as one line; anything else is a bug and keeps its
traceback.
"""


class RsbkitError(Exception):
    """Base class: a problem with the user's input, not with rsbkit."""


class RecipeError(RsbkitError, ValueError):
    """Unknown recipe, field or choice, or a value out of range."""


class DataError(RsbkitError):
    """A dataset that is missing, empty or cannot be read."""


class CheckpointError(RsbkitError):
    """A checkpoint that is truncated, foreign or does not match the run."""


class RunError(RsbkitError):
    """A run folder that cannot be used as asked (exists, or nothing to resume)."""


class RunLockedError(RunError):
    """Another process writes into this run folder (it holds the folder's lock); `holder` says who."""

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


class RunWriteError(RunError, OSError):
    """A record or checkpoint the file system refused to write (no space, quota, read-only)."""


class NonFiniteLossError(RsbkitError, FloatingPointError):
    """The training loss became NaN or infinite."""


class DistributedError(RsbkitError):
    """A launcher environment, backend or batch split that multi-process training cannot use."""
