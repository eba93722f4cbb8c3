"""Lazy package attributes (PEP 562) for packages whose submodules are slow to import.

``__getattr__, __dir__ = lazy_attributes(__name__, {"submodule": ("name", ...)})`` in a
package's ``__init__`` makes ``package.name`` import ``package.submodule`` on first use only.
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping, Sequence


def lazy_attributes(package: str, submodules: Mapping[str, Sequence[str]]) -> tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, which resolve each name of
    ``submodules[module]`` from ``package.module``, importing it on first access."""
    where = {name: module for module, names in submodules.items() for name in names}

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(where))

    return __getattr__, __dir__
