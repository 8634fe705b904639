"""User-facing errors: each carries one line that says what went wrong and what to do.

The CLI prints ``str(error)`` alone (no traceback) and exits with status 2; library users can
catch :class:`LifelongError` to handle every mistake of input or environment in one place.
"""

from __future__ import annotations


class LifelongError(Exception):
    """Base class for every error caused by the user's input or environment."""


class ConfigError(LifelongError, ValueError):
    """An invalid or impossible setting, detected before training starts (or, where only a
    training step can tell, at that step: a batch the model cannot train on)."""


class UnknownNameError(ConfigError, KeyError):
    """An unknown data set, stream, model or strategy name."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class ResourceError(ConfigError):
    """A stream or model that would need more memory than the machine has (checked first)."""


class DataError(LifelongError):
    """Missing, corrupted or unreadable data files, or a failed download."""


class FolderLockedError(LifelongError):
    """Another process (or thread) holds the lock of a run folder or data folder."""


class TrainingDivergedError(LifelongError):
    """The loss became NaN or infinite; results of finished tasks are kept."""


class RunInterrupted(LifelongError):
    """Ctrl-C during a run: results of finished tasks are saved; ``--resume`` continues."""

    exit_code = 130
