"""The one error type serving endpoints raise on purpose (JSON 4xx/5xx with one line)."""

from __future__ import annotations

from seqflow.errors import SeqflowError


class ApiError(SeqflowError):
    """An HTTP error answer: ``status`` (e.g. 404, 503), ``reason`` (short machine-readable word),
    ``str(e)`` (one human line)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason = int(status), reason
        super().__init__(message)
