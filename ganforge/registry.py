"""Registries: where ganforge's plug-ins are named, and the options they declare.

A plug-in (a loss, a model, a text encoder, a feature extractor) is registered under a name with a
one-line description. The registry is the single list of them: the command line's choices and help,
config validation, checkpoint loading and the studio all read it. A plug-in declares the config
options it reads (`Option`) beside it; TrainConfig gathers every declaration, so `--set KEY=VALUE`,
`ganforge train --help` and validation follow from them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ganforge.errors import GanforgeError

T = TypeVar("T")


NEW = object()  # an Option's `before` when its default is also how runs made before it behaved


@dataclass(frozen=True)
class Option:
    """One config key: its name, type (e.g. `float`, `int | None`), default, what it means, an optional
    `check(value) -> None or why the value is wrong` (None values are not checked), and `before`: the value
    that runs saved before the option existed trained with, when it is not the default (resumed so)."""

    name: str
    type: Any
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    before: Any = NEW


def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def bounded(low: float, high: float) -> Callable[[Any], str | None]:
    """low <= v <= high, for whole numbers: "must be at least low" or "at most high"."""
    return lambda v: f"must be at least {low}" if v < low else f"must be at most {high}" if v > high else None


def within(low: float, high: float) -> Callable[[Any], str | None]:
    """low <= v <= high, for fractions: "must be in [low, high]"."""
    return lambda v: None if low <= v <= high else f"must be in [{low}, {high}]"


def non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def positive(v: float) -> str | None:
    return None if v > 0 and math.isfinite(v) else "must be positive"


class Registry(Generic[T]):
    """Named entries of one kind, in the order they were registered."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """A decorator: `@LOSSES.register("hinge", "...")` above the class (or function) registers it."""
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name], self._descriptions[name] = entry, description
            entry.name = name
            return entry
        return add

    def unregister(self, name: str) -> None:
        """Take an entry out again (a plug-in registered for a while, as a test's)."""
        del self._entries[name], self._descriptions[name]

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise GanforgeError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def description(self, name: str) -> str:
        return self._descriptions[name]

    def help(self) -> str:
        """'name: description; ...' for a command's help."""
        return "; ".join(f"{name}: {self._descriptions[name]}" for name in self._entries)

    def options(self) -> list[Option]:
        """Every option the entries declare, each once."""
        found: list[Option] = []
        for entry in self._entries.values():
            found += [option for option in declared_options(entry) if option not in found]
        return found


def declared_options(entry) -> list[Option]:
    """The options an entry declares in its `options` attribute; for a class, with those of its bases."""
    owners = reversed(entry.__mro__) if isinstance(entry, type) else [entry]
    found: list[Option] = []
    for owner in owners:
        found += [o for o in vars(owner).get("options", ()) if o not in found]
    return found
