"""Names a package re-exports but imports only when first used (PEP 562)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def lazy_exports(
    package: str, exported_from: Mapping[str, str], names: Iterable[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for lazy re-exports.

    ``exported_from`` maps each lazily exported name to the module defining
    it. A name is imported once, on first use, and then kept in the package
    like any other attribute; ``__dir__`` lists ``names`` before that.
    """
    namespace = sys.modules[package].__dict__
    listed = frozenset(names)

    def __getattr__(name: str) -> object:  # noqa: N807 - the PEP 562 hook
        module = exported_from.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the PEP 562 hook
        return sorted({*namespace, *listed})

    return __getattr__, __dir__
