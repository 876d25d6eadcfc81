"""Name -> implementation registries with validated dispatch.

Every algorithm family (calibration methods, matchers, architectures, ...)
keeps one :class:`Registry`, so the UI can list the names in a select box and
the CLI can accept them by name. Unknown names fail with the valid ones and
the nearest match.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of implementations.

    Parameters
    ----------
    kind : str
        What the entries are, used in error messages ("calibration method").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, *, doc: str = "") -> Callable[[T], T]:
        """Decorator adding an entry under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj, doc=doc)
            return obj

        return deco

    def add(self, name: str, obj: T, *, doc: str = "") -> None:
        key = name.strip().lower()
        if key in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[key] = obj
        first = (doc or getattr(obj, "__doc__", "") or "").strip().splitlines()
        self._docs[key] = first[0] if first else ""

    def get(self, name: str) -> T:
        """Return the entry called ``name``; ``ValueError`` listing valid names if none."""
        key = str(name).strip().lower()
        if key in self._items:
            return self._items[key]
        valid = ", ".join(self._items)
        close = difflib.get_close_matches(key, list(self._items), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {self.kind} {name!r}; valid names are: {valid}.{hint}")

    def describe(self, name: str) -> str:
        return self._docs[self.get_key(name)]

    def get_key(self, name: str) -> str:
        self.get(name)
        return str(name).strip().lower()

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
