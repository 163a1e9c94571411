"""Exception types shared across seqflow."""

from __future__ import annotations


class SeqflowError(Exception):
    """Base class of every error seqflow raises on purpose."""


class ConfigError(SeqflowError):
    """A configuration value is invalid (raised before any work starts)."""


class AudioDecodeError(SeqflowError):
    """An audio file or byte string could not be decoded.

    Attributes:
        path: the file (or a description of the bytes) that failed.
        reason: a short machine-readable reason, e.g. ``unreadable``, ``empty``, ``nan_or_inf``.
    """

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class DataValidationError(SeqflowError):
    """Too much of a corpus is bad, or a source has no valid utterance."""


class ShardError(SeqflowError):
    """Shards are missing, corrupt, or too few for the requested ranks and workers."""
