"""The lazy entry-point mapping behind device kinds and data sets: how plug-ins join physnn.

A lab's package adds a device kind (``physnn.devices``) or a data set (``physnn.datasets``)
by naming it in its own ``pyproject.toml``; physnn never imports it until a config asks for
that name. One class serves both registries so the rules are the same for both: names are
listed without importing anything (a broken plug-in cannot hide the others), loading is once
per name, and a plug-in that fails to load is a one-line ``ValueError`` naming the entry
point and the package to fix instead of a traceback from inside someone else's code. It
sits beside ``_version`` under every layer: ``physnn.core`` and ``physnn.data`` both use it
and may not import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


def provider_of(ep: EntryPoint) -> str:
    """The distribution that declares ``ep``, as ``"name version"`` (what to reinstall or fix)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown package"
    return f"{dist.metadata['Name']} {dist.version}"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "no message"
    return f"{type(e).__name__}: {text}"


class EntryPointRegistry(Mapping[str, T], Generic[T]):
    """Name -> object: registered at run time, or found in an entry-point group on first use.

    Iterating, ``len`` and ``in`` read installed metadata only; ``registry[name]`` imports
    the one entry point asked for. A name two installed packages both claim is refused when
    asked for (naming both), rather than silently taking whichever comes first on the path.
    """

    def __init__(self, group: str, what: str, builtin: Mapping[str, T] | None = None) -> None:
        self.group = group
        """The entry-point group, e.g. ``physnn.devices``."""
        self.what = what
        """What one entry is, for messages: ``device kind``, ``data set``."""
        self._builtin = set(builtin or ())
        self._runtime: dict[str, T] = dict(builtin or {})
        self._loaded: dict[str, T] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._clashes: dict[str, list[EntryPoint]] = {}

    def _eps(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            found: dict[str, EntryPoint] = {}
            for ep in entry_points(group=self.group):
                first = found.setdefault(ep.name, ep)
                if first is not ep and first.value != ep.value:
                    self._clashes.setdefault(ep.name, [first]).append(ep)
            self._entry_points = found
        return self._entry_points

    def __getitem__(self, name: str) -> T:
        if name in self._runtime:
            return self._runtime[name]
        if name in self._loaded:
            return self._loaded[name]
        ep = self._eps()[name]
        if name in self._clashes:
            claims = "; ".join(f"{e.value!r} by {provider_of(e)}" for e in self._clashes[name])
            raise ValueError(f"{self.what} {name!r} is registered twice ({claims}); uninstall "
                             "one of those packages")
        try:
            obj = ep.load()
        except Exception as e:  # a plug-in's own import failed: its bug, reported in one line
            raise ValueError(
                f"{self.what} {name!r} is registered as {ep.value!r} by {provider_of(ep)}, which "
                f"cannot be loaded ({_one_line(e)}); reinstall or fix the package that provides "
                "it (for physnn itself: pip install -e .)"
            ) from None
        if not callable(obj):
            raise ValueError(f"{self.what} {name!r} ({ep.value!r}, by {provider_of(ep)}) is "
                             f"not callable but a {type(obj).__name__}")
        self._loaded[name] = obj
        return obj

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._eps()) | set(self._runtime)))

    def __len__(self) -> int:
        return len(set(self._eps()) | set(self._runtime))

    def __contains__(self, name: object) -> bool:
        return name in self._runtime or name in self._eps()

    def register(self, name: str, obj: T, *, replace: bool = False) -> None:
        """Add ``name`` at run time (it wins over an entry point of the same name); an
        existing name is refused unless ``replace``, so two plug-ins cannot overwrite each
        other by accident."""
        if not replace and name in self:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._builtin.discard(name)
        self._runtime[name] = obj

    def provider(self, name: str) -> str:
        """Where ``name`` comes from, without importing it: the package that declares its entry
        point, or the module of an object registered at run time."""
        if name in self._builtin:
            return "physnn (built in)"
        if name in self._runtime:
            module = getattr(self._runtime[name], "__module__", None) or "?"
            return f"{module} (registered at run time)"
        return provider_of(self._eps()[name])

    def reload(self) -> None:
        """Forget the entry points read so far, e.g. after installing a plug-in in this process."""
        self._entry_points = None
        self._clashes.clear()
        self._loaded.clear()
