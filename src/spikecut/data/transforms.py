"""Small composable image transforms on ``[C, H, W]`` tensors (no torchvision).

Every transform is a callable object with a readable ``repr`` and returns a new tensor,
never modifying its input, so datasets can hand out views of their stored images.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

Transform = Callable[[Tensor], Tensor]


class Compose:
    """Apply transforms in order: ``Compose([a, b])(x) == b(a(x))``."""

    def __init__(self, transforms: Iterable[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])" if inner else f"{type(self).__name__}([])"


class Normalize:
    """Per-channel ``(x - mean) / std`` on ``[..., C, H, W]``.

    ``mean`` and ``std`` are a number (all channels) or one value per channel.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std")
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(
                f"mean has {len(self.mean)} channels but std has {len(self.std)}; they must match"
            )
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim < 3:
            raise ValueError(f"Normalize expects [..., C, H, W], got shape {tuple(x.shape)}")
        channels = max(len(self.mean), len(self.std))
        if channels != 1 and x.shape[-3] != channels:
            raise ValueError(
                f"Normalize has {channels} channels of statistics but the input has "
                f"{x.shape[-3]} (shape {tuple(x.shape)})"
            )
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={_fmt(self.mean)}, std={_fmt(self.std)})"


def translate(x: Tensor, dy: int, dx: int, fill: float | Sequence[float] = 0.0) -> Tensor:
    """Shift the last two axes of ``x`` by ``dy`` rows and ``dx`` columns.

    Pixel ``(y, x)`` moves to ``(y + dy, x + dx)``; pixels leaving the frame are dropped
    and the uncovered area takes ``fill`` (a number, or one value per channel).
    """
    if x.ndim < 2:
        raise ValueError(f"translate expects [..., H, W], got shape {tuple(x.shape)}")
    out = _filled_like(x, fill)
    h, w = x.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    dst_y, src_y = _spans(dy, h)
    dst_x, src_x = _spans(dx, w)
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


class RandomTranslate:
    """Shift an image by random whole pixels, independently per axis.

    Shifts are uniform on ``[-max_shift, max_shift]``. Use for ``fill`` the value that a
    blank pixel has *after* normalisation (e.g. ``(0 - mean) / std``), so the uncovered
    border looks like background. Pass a ``torch.Generator`` for reproducible draws;
    without one the global torch RNG is used, which DataLoader seeds per worker (a
    shared generator would be copied into each worker and repeat the same shifts).
    """

    def __init__(
        self,
        max_shift: int,
        fill: float | Sequence[float] = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Integral):
            raise TypeError(f"max_shift must be an int, got {max_shift!r}")
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)
        self.fill = fill if isinstance(fill, numbers.Real) else _per_channel(fill, "fill")
        self.generator = generator

    def sample_shift(self) -> tuple[int, int]:
        """Draw ``(dy, dx)``, each uniform on ``[-max_shift, max_shift]``."""
        m = self.max_shift
        dy, dx = torch.randint(-m, m + 1, (2,), generator=self.generator).tolist()
        return dy, dx

    def __call__(self, x: Tensor) -> Tensor:
        dy, dx = self.sample_shift()
        return translate(x, dy, dx, self.fill)

    def __repr__(self) -> str:
        fill = f"{self.fill:.4g}" if isinstance(self.fill, numbers.Real) else _fmt(self.fill)
        return f"{type(self).__name__}(max_shift={self.max_shift}, fill={fill})"


def _spans(shift: int, size: int) -> tuple[slice, slice]:
    """Destination and source slices along one axis for a shift with ``|shift| < size``."""
    if shift >= 0:
        return slice(shift, size), slice(0, size - shift)
    return slice(0, size + shift), slice(-shift, size)


def _filled_like(x: Tensor, fill: float | Sequence[float]) -> Tensor:
    if isinstance(fill, numbers.Real):
        return torch.full_like(x, float(fill))
    values = torch.tensor(_per_channel(fill, "fill"), dtype=x.dtype, device=x.device)
    if x.ndim < 3 or x.shape[-3] != len(values):
        raise ValueError(
            f"fill has {len(values)} channel values but the input has shape {tuple(x.shape)}"
        )
    return values.view(-1, 1, 1).expand(x.shape).clone()


def _per_channel(value: float | Sequence[float], what: str) -> tuple[float, ...]:
    if isinstance(value, numbers.Real):
        return (float(value),)
    values = tuple(float(v) for v in value)
    if not values:
        raise ValueError(f"{what} must not be empty")
    return values


def _fmt(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
