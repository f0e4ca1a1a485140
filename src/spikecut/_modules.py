"""Module-tree helpers written once: replacing children in place, and hooks for one block."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["replace_children", "restore_children", "forward_hooks"]

Replaced = list[tuple[nn.Module, str, nn.Module]]


def replace_children(
    model: nn.Module, replace: Callable[[nn.Module], nn.Module | None]
) -> Replaced:
    """Replace in place every child ``c`` (at any depth) of ``model`` for which ``replace(c)``
    returns a module. Returns ``(parent, name, old child)`` of each replacement, which
    :func:`restore_children` puts back."""
    replaced: Replaced = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = replace(child)
            if new is not None:
                replaced.append((parent, name, child))
                setattr(parent, name, new)
    return replaced


def restore_children(replaced: Replaced) -> None:
    """Undo :func:`replace_children`."""
    for parent, name, child in replaced:
        setattr(parent, name, child)


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Register each ``(module, hook)`` as a forward hook for the block; removed on exit,
    also when the block raises."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
