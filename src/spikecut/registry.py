"""A name → factory registry shared by datasets and models (timm-style ``create(name)``).

Names are case-insensitive. A factory's keyword parameters are the options it accepts, so a
misspelt option fails loudly with the list of accepted ones instead of being ignored. Facts
about what a factory builds (input shape, classes, frames or not) are registered beside it
and read without building anything.

Entry points are short: each sets what makes its variant (an architecture, a file layout)
and passes the rest to one builder shared by its family; :func:`options_from` makes the
entry point's signature list the builder's options too, so the registry still checks them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from ._deprecation import deprecated_parameters

__all__ = ["Registry", "option_names", "options_from"]

Factory = TypeVar("Factory", bound=Callable[..., Any])


class Registry(Generic[Factory]):
    """Factories of one kind (``"dataset"``, ``"model"``) by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Factory] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[Factory], Factory]:
        """Decorator registering a factory under ``name``; ``info`` are facts about what it
        builds (e.g. ``frames=True`` for a dataset of frame sequences), read by :meth:`info`
        without building anything."""
        key = name.lower()

        def decorate(factory: Factory) -> Factory:
            old = self._factories.get(key)
            # Re-registering the same function (e.g. after a module reload) is harmless.
            if old is not None and _qualified(old) != _qualified(factory):
                raise ValueError(f"{self.kind} {name!r} is already registered by {_qualified(old)}")
            self._factories[key] = factory
            self._info[key] = dict(info)
            return factory

        return decorate

    def info(self, name: str) -> dict[str, Any]:
        """The facts registered with ``name`` (empty when none were given)."""
        self.get(name)
        return dict(self._info.get(name.lower(), {}))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._factories

    def get(self, name: str) -> Factory:
        """The factory registered as ``name``; ValueError listing the names if unknown."""
        factory = self._factories.get(name.lower())
        if factory is None:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return factory

    def check_options(self, name: str, options: Iterable[str], fixed: Iterable[str] = ()) -> None:
        """TypeError naming any option the factory does not take (``fixed`` args aside)."""
        accepted = option_names(self.get(name), exclude=fixed)
        if accepted is None:
            return
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(
                f"{self.kind} {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"accepted options: {', '.join(accepted) or '(none)'}"
            )


def option_names(factory: Callable[..., Any], exclude: Iterable[str] = ()) -> list[str] | None:
    """Keyword parameters of ``factory`` not in ``exclude``; ``None`` if it takes ``**kwargs``.

    Old names the factory still accepts for one release (:mod:`spikecut._deprecation`) count.
    """
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    skip = set(exclude)
    names = [p.name for p in params if p.kind in keyword] + list(deprecated_parameters(factory))
    return [name for name in names if name not in skip]


def options_from(builder: Callable[..., Any]) -> Callable[[Factory], Factory]:
    """Decorator for an entry point ``entry(own..., **options)`` that hands ``options`` to
    ``builder``: its signature becomes its own parameters followed, as keyword-only ones,
    by the builder's parameters that have a default (the options its family shares).

    The registry (:func:`option_names`), ``help()`` and :func:`inspect.signature` then see
    every option the entry point takes, with the entry point's own defaults first.
    """
    shared = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(builder).parameters.values()
        if p.default is not inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]

    def decorate(entry: Factory) -> Factory:
        own = inspect.signature(entry)
        params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(params) == len(own.parameters):
            raise TypeError(f"{_qualified(entry)} must take **options to pass to the builder")
        names = {p.name for p in params}
        params += [p for p in shared if p.name not in names]
        entry.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        return entry

    return decorate


def _qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"
