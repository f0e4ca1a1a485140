"""Old public names that keep working for one release, each with a ``DeprecationWarning``.

Renamed keyword parameters go through :func:`renamed_parameters`; renamed functions,
methods and attributes call :func:`warn_deprecated` and forward to the new name.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["warn_deprecated", "renamed_parameters", "deprecated_parameters"]

F = TypeVar("F", bound=Callable[..., Any])


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated (removed in the next release) in favour of ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_parameters(**renames: str | tuple[str, Callable[[Any], Any]]) -> Callable[[F], F]:
    """Decorator: keyword ``old=value`` still reaches parameter ``new`` (with a warning).

    ``renames`` maps each old keyword to its new name, or to ``(new, convert)`` when the
    meaning was turned around too (e.g. ``repeat=True`` became ``frames=False``). Giving
    both the old and the new keyword is a TypeError.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, target in renames.items():
                if old not in kwargs:
                    continue
                new, convert = target if isinstance(target, tuple) else (target, None)
                if new in kwargs:
                    raise TypeError(
                        f"{func.__qualname__}() got both {old!r} (deprecated) and {new!r}"
                    )
                value = kwargs.pop(old)
                hint = f"{new}=" + ("(the opposite)" if convert is not None else "...")
                warn_deprecated(f"{func.__qualname__}({old}=...)", hint)
                kwargs[new] = value if convert is None else convert(value)
            return func(*args, **kwargs)

        wrapper.__deprecated_parameters__ = tuple(renames)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def deprecated_parameters(func: Callable[..., Any]) -> tuple[str, ...]:
    """The old keywords ``func`` still accepts (see :func:`renamed_parameters`)."""
    return tuple(getattr(func, "__deprecated_parameters__", ()))
