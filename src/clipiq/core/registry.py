"""One registry type behind every name -> thing table in clipiq (metrics, weights, degradations, ...)."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar, overload

from clipiq.core.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class _Lazy:
    """A ``"package.module:attribute"`` (or ``"package.module"``) reference, imported on first use."""

    __slots__ = ("target",)

    def __init__(self, target: str):
        if not isinstance(target, str) or not target.replace(":", "").replace(".", "").replace("_", "").isalnum():
            raise ValueError(f"lazy entry {target!r} must look like 'package.module:attribute' or 'package.module'")
        self.target = target

    def load(self) -> object:
        module, _, attr = self.target.partition(":")
        obj: object = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj


class Registry(Generic[T]):
    """Names (case-insensitive) to entries, with lazy entries, did-you-mean errors and filtered listing.

    ``kind`` names what the registry holds ("metric", "degradation") and appears in its errors. Listing keeps
    registration order, because some tables are ordered on purpose (degradation type ids follow it).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | _Lazy] = {}
        self._names: dict[str, str] = {}  # lower-case key -> name as registered

    @overload
    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T: ...
    @overload
    def register(self, name: str, entry: None = None, *, overwrite: bool = False) -> Callable[[T], T]: ...

    def register(self, name: str, entry: T | None = None, *, overwrite: bool = False) -> T | Callable[[T], T]:
        """Add ``entry`` under ``name``; without an entry, return a decorator that registers its target."""
        if entry is None:
            return lambda obj: self.register(name, obj, overwrite=overwrite)
        self._add(name, entry, overwrite)
        return entry

    def register_lazy(self, name: str, target: str, *, overwrite: bool = False) -> None:
        """Add an entry imported on first lookup from ``"package.module:attribute"`` (or a whole module)."""
        self._add(name, _Lazy(target), overwrite)

    def _add(self, name: str, entry: T | _Lazy, overwrite: bool) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        key = name.lower()
        if key in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[key] = entry
        self._names[key] = name

    def unregister(self, name: str) -> T:
        """Remove and return an entry."""
        entry = self.get(name)
        key = name.lower()
        del self._entries[key], self._names[key]
        return entry

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises UnknownNameError with close matches."""
        key = name.lower() if isinstance(name, str) else name
        if key not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        entry = self._entries[key]
        if isinstance(entry, _Lazy):
            entry = self._entries[key] = entry.load()  # type: ignore[assignment]
        return entry  # type: ignore[return-value]

    def unknown_message(self, name: object) -> str:
        """The error text for an unknown name: what is available and what is close."""
        close = difflib.get_close_matches(str(name).lower(), list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(self._names[c] for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}.{hint}"

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str | None = None, where: Callable[[T], bool] | None = None) -> list[str]:
        """Names in registration order, optionally only those matching a glob ``pattern`` and/or ``where(entry)``.

        ``where`` loads lazy entries; a pattern alone does not.
        """
        out = list(self._names.values())
        if pattern is not None:
            out = [n for n in out if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
        if where is not None:
            out = [n for n in out if where(self.get(n))]
        return out

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order (lazy entries are loaded)."""
        return [(n, self.get(n)) for n in self.names()]

    def values(self) -> list[T]:
        """Entries in registration order (lazy entries are loaded)."""
        return [self.get(n) for n in self.names()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def check_known_options(kind: str, name: str, options: Iterable[str], known: Iterable[str]) -> None:
    """Raise ConfigError naming the unknown options of ``kind`` ``name`` (e.g. segmenter slic), the known ones
    and the closest match: the one check behind create_metric, create_restorer, create_segmenter and
    create_describer."""
    known = sorted(set(known))
    unknown = sorted(set(options) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for {kind} {name}; "
                          f"known: {', '.join(known) or 'none'}.{hint}")


__all__ = ["Registry", "check_known_options"]
