"""What a config option accepts, declared beside the option (``opt(default, ge=..., choices=...)``),
and the one checker that applies those declarations to every field of a config.

A leaf module, like :mod:`mtdiff.config`, which declares its fields with :func:`opt` and calls
:func:`check_values` from ``load_config``; :func:`mtdiff.models.check_config` calls it again
with the registries, for the fields that name one (``opt(registry="models")``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

from mtdiff.errors import ConfigError, choice_error

# --------------------------------------------------------------------------------------------
# What a field accepts, declared beside the field.


@dataclass(frozen=True)
class Accepts:
    """Valid values of one option: numbers in a range, one of ``choices``, a name in the
    registry ``registry`` (resolved by mtdiff.models.check_config), or a ``pattern``. For tuple
    fields the rule applies to every item and ``min_items`` bounds the length."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    registry: str | None = None
    pattern: str | None = None
    min_items: int = 0

    def describe(self, integer: bool = False) -> str:
        if integer and self.choices is None and self.pattern is None and self.registry is None:
            return self.describe().replace("a finite number", "an integer")
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        if self.pattern is not None:
            return f"a string matching {self.pattern}"
        lo = f"> {self.gt:g}" if self.gt is not None else (f">= {self.ge:g}" if self.ge is not None else "")
        hi = f"< {self.lt:g}" if self.lt is not None else (f"<= {self.le:g}" if self.le is not None else "")
        return "a finite number " + " and ".join(p for p in (lo, hi) if p) if lo or hi else "a finite number"

    def ok(self, value: Any, choices: Collection | None = None) -> bool:
        if self.registry is not None:
            return choices is None or value in choices
        if self.choices is not None:
            return value in self.choices
        if self.pattern is not None:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (math.isfinite(value)
                    and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                    and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return True


def opt(default: Any = dataclasses.MISSING, *, factory: Callable | None = None, **accepts) -> Any:
    """A dataclass field with its valid values (see :class:`Accepts`) in its metadata."""
    meta = {"accepts": Accepts(**accepts)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


POSITIVE = {"gt": 0}  # a finite number > 0
COUNT = {"ge": 1}  # an integer >= 1
PROBABILITY = {"ge": 0, "lt": 1}  # [0, 1)
FRACTION = {"ge": 0, "le": 1}  # [0, 1]
# Largest batch, sample count or width accepted: far above anything these datasets or a GPU's
# memory allow, it stops typos (a batch of 10**9) before they try to allocate.
MAX_COUNT = 2**20


# --------------------------------------------------------------------------------------------
# Checks


def _fields(obj: Any, prefix: str = ""):
    """(dotted key, value, Accepts | None) of every leaf field of a config dataclass."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _fields(value, key + ".")
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            for name, sub in value.items():
                yield from _fields(sub, f"{key}.{name}.")
        else:
            yield key, value, f.metadata.get("accepts")


def check_values(cfg, registry: Callable[[str, str], Collection] | None = None) -> None:
    """Every field against what it declares it accepts; raises a one-line ConfigError naming
    the key, the value and what is accepted. ``registry(name, key)`` returns the names of a
    registry (mtdiff.models.check_config passes it); without it registry fields are skipped."""
    for key, value, accepts in _fields(cfg):
        if accepts is None or value is None:
            continue
        if accepts.registry is not None and registry is None:
            continue
        choices = registry(accepts.registry, key) if accepts.registry is not None else None
        if isinstance(value, tuple):
            if len(value) < accepts.min_items:
                raise ConfigError(f"{key}={list(value)!r} is not accepted; accepted: at least "
                                  f"{accepts.min_items} value(s), each {accepts.describe(True)}")
            for i, item in enumerate(value):
                if not accepts.ok(item, choices):
                    raise ConfigError(f"{key}[{i}]={item!r} is not accepted; accepted: "
                                      f"{accepts.describe(isinstance(item, int))}")
        elif not accepts.ok(value, choices):
            if choices is not None:
                raise choice_error(key, value, choices)
            raise ConfigError(f"{key}={value!r} is not accepted; accepted: "
                              f"{accepts.describe(isinstance(value, int) and not isinstance(value, bool))}")
