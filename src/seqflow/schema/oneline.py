"""Config errors as one line on stderr and exit status 2 (the traceback only with ``--verbose``).

>>> with reported("pipeline", verbose=False):          # doctest: +SKIP
...     raise ConfigError("trainer.max_epochs=-1: must be an integer >= 1")
seqflow pipeline: trainer.max_epochs=-1: must be an integer >= 1     (stderr; exit 2)
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Iterator

from seqflow.errors import ConfigError

EXIT_CONFIG = 2


def config_error_types() -> tuple[type, ...]:
    """The exception types that mean "the configuration is wrong": seqflow's ``ConfigError``,
    Hydra's errors (unknown key or group option, unparsable override) and OmegaConf's
    (bad interpolation, wrong type for a typed node)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return ConfigError, HydraException, OmegaConfBaseException


def one_line(exc: BaseException) -> str:
    """The error's message and its cause's, joined into one line (Hydra puts the key in the
    first line and the reason in the cause)."""
    parts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(parts) < 3:
        seen.add(id(exc))
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        text = text.split(" Config search path:")[0]
        key = getattr(exc, "full_key", None)
        if key and key not in text:
            text = f"{key}: {text}"
        if type(exc).__name__ == "OverrideParseException":
            text += " (quote values with spaces or non-ASCII letters: key='value')"
        if text and not any(text in p for p in parts):
            parts.append(text)
        exc = exc.__cause__
    return " | ".join(parts) or "invalid configuration"


@contextlib.contextmanager
def reported(command: str, verbose: bool) -> Iterator[None]:
    """Run the block; a config error (:func:`config_error_types`) prints ``seqflow <command>:
    <one line>`` to stderr (after the traceback when ``verbose``) and exits with status 2.

    Raises:
        SystemExit: status 2 on a config error; other exceptions pass through unchanged.
    """
    try:
        yield
    except config_error_types() as e:
        if verbose:
            traceback.print_exc()
        print(f"seqflow {command}: {one_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
