"""Value rules of the config schema: each checks one value and raises a one-line
:class:`~seqflow.errors.ConfigError` naming the key, the value and what is allowed.

>>> Int(min=1).check("trainer.max_epochs", -1)
Traceback (most recent call last):
...
seqflow.errors.ConfigError: trainer.max_epochs=-1: must be an integer >= 1
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from seqflow.errors import ConfigError


def shown(value: Any) -> str:
    """The value as the user would type it (strings quoted, lists as lists, ≤ 80 characters)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={shown(value)}: must be {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Rule:
    """Base: ``optional`` lets ``null`` through."""

    optional: bool = False

    def check(self, key: str, value: Any) -> None:
        if value is None and self.optional:
            return
        self._check(key, value)

    def _check(self, key: str, value: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Rule):
    """An integer (not a bool, not a string) in ``[min, max]``."""

    min: int | None = None
    max: int | None = None

    def _check(self, key: str, value: Any) -> None:
        ok = _is_int(value) and (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        if not ok:
            b = _bounds(self.min, self.max)
            raise fail(key, value, "an integer" + (f" {b}" if b else "") + (" or null" if self.optional else ""))


@dataclass(frozen=True)
class Float(Rule):
    """A number (int or float, not a bool) in ``[min, max]`` (``min_open``: ``> min``)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def _check(self, key: str, value: Any) -> None:
        ok = _is_number(value) and value == value and (
            self.min is None or (value > self.min if self.min_open else value >= self.min)) and (
            self.max is None or (value < self.max if self.max_open else value <= self.max))
        if not ok:
            b = _bounds(self.min, self.max, self.min_open, self.max_open)
            raise fail(key, value, "a number" + (f" {b}" if b else "") + (" or null" if self.optional else ""))


def Prob(optional: bool = False) -> Float:  # noqa: N802 - reads like the other rules
    """A probability or fraction in [0, 1]."""
    return Float(optional=optional, min=0.0, max=1.0)


@dataclass(frozen=True)
class Bool(Rule):
    def _check(self, key: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise fail(key, value, "true or false")


@dataclass(frozen=True)
class Enum(Rule):
    choices: tuple = ()

    def _check(self, key: str, value: Any) -> None:
        if value not in self.choices or isinstance(value, bool):
            raise fail(key, value, "one of " + ", ".join(map(str, self.choices)))


@dataclass(frozen=True)
class Str(Rule):
    """A non-empty string."""

    def _check(self, key: str, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            raise fail(key, value, "a non-empty string")


@dataclass(frozen=True)
class Range(Rule):
    """``[lo, hi]``: two numbers with ``lo <= hi``, both in ``[min, max]`` (``min_open``: ``> min``)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False

    def _check(self, key: str, value: Any) -> None:
        b = _bounds(self.min, self.max, self.min_open)
        allowed = "[lo, hi]: two numbers, lo <= hi" + (f", each {b}" if b else "")
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(map(_is_number, value)):
            raise fail(key, value, allowed)
        lo, hi = value
        each = Float(min=self.min, max=self.max, min_open=self.min_open)
        if lo > hi:
            raise ConfigError(f"{key}={shown(list(value))}: must be {allowed} (lo {lo:g} > hi {hi:g})")
        try:
            each.check(key, lo)
            each.check(key, hi)
        except ConfigError:
            raise fail(key, list(value), allowed) from None


@dataclass(frozen=True)
class ListOf(Rule):
    """A list whose items each pass ``item`` (``min_len``, ``length``: item counts)."""

    item: Rule = Rule()
    min_len: int = 0
    length: int | None = None

    def _check(self, key: str, value: Any) -> None:
        if not isinstance(value, (list, tuple)):
            raise fail(key, value, "a list")
        if len(value) < self.min_len or (self.length is not None and len(value) != self.length):
            n = self.length if self.length is not None else f"at least {self.min_len}"
            raise fail(key, list(value), f"a list of {n} item(s)")
        for i, v in enumerate(value):
            self.item.check(f"{key}[{i}]", v)


@dataclass(frozen=True)
class WritableDir(Rule):
    """A folder seqflow writes to: a non-empty path that is a folder or can be created (its
    nearest existing parent is a writable folder). URIs (``scheme://``) are left to their client."""

    def _check(self, key: str, value: Any) -> None:
        Str().check(key, value)
        if "://" in value:
            return
        p = Path(value)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{key}={shown(value)}: must be a folder; it is a file")
        parent = p
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"{key}={shown(value)}: cannot be created: {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}={shown(value)}: not writable ({parent} is not writable by this user)")


@dataclass(frozen=True)
class ExistingDirs(Rule):
    """A list of folders that must exist (input audio folders)."""

    def _check(self, key: str, value: Any) -> None:
        ListOf(item=Str()).check(key, value)
        for i, v in enumerate(value):
            if not Path(v).is_dir():
                raise ConfigError(f"{key}[{i}]={shown(v)}: must be an existing folder; no folder there")
