"""The paper's image augmentations on ``[C, H, W]`` tensors (SPEC §7), without torchvision.

CIFAR training order: :class:`RandomCrop` (32, padding 4) → :class:`RandomHorizontalFlip` →
:class:`AutoAugment` (CIFAR-10 policy) on uint8 images, then :class:`ToFloat` and
``Normalize``, then :class:`Cutout` (16) on the normalised image.

Every random draw uses the torch RNG (``torch.randint`` / ``torch.rand``) with the transform's
optional ``generator``: without one the global torch RNG is used, which ``torch.manual_seed``
makes reproducible and DataLoader seeds differently in every worker (a shared generator would
be copied into each worker and repeat the same draws). Transforms return new tensors and never
modify their input. The deterministic parts are plain functions (:func:`crop`,
:func:`cutout`, :func:`apply_op`) so their effect can be checked on a known image.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import Tensor

from .transforms import Compose, Normalize, translate

__all__ = [
    "AUTOAUGMENT_OPS",
    "CIFAR10_POLICY",
    "AutoAugment",
    "Cutout",
    "RandomCrop",
    "RandomHorizontalFlip",
    "ToFloat",
    "apply_op",
    "crop",
    "cutout",
    "op_value",
    "pipeline",
]


class ToFloat:
    """uint8 ``[..., H, W]`` in 0..255 → float32 in [0, 1]."""

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"ToFloat expects a uint8 image, got {x.dtype}")
        return x.to(torch.float32) / 255.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ---------------------------------------------------------------------------------------------
# Crop, flip, cutout


def crop(
    x: Tensor, top: int, left: int, size: int | tuple[int, int], padding: int = 0, fill: float = 0
) -> Tensor:
    """The ``size`` window (``H × W``, or ``size × size``) at ``(top, left)`` of ``x`` padded
    by ``padding`` on every side.

    ``top``/``left`` index the padded image, so they range over ``0..H + 2·padding - size``.
    """
    sh, sw = _pair(size)
    h, w = x.shape[-2:]
    ph, pw = h + 2 * padding, w + 2 * padding
    if not (0 <= top <= ph - sh and 0 <= left <= pw - sw):
        raise ValueError(
            f"crop window {sh}x{sw} at ({top}, {left}) does not fit the padded {ph}x{pw} image"
        )
    padded = torch.full((*x.shape[:-2], ph, pw), fill, dtype=x.dtype, device=x.device)
    padded[..., padding : padding + h, padding : padding + w] = x
    return padded[..., top : top + sh, left : left + sw].clone()


class RandomCrop:
    """Pad by ``padding`` pixels of ``fill``, then cut a ``size`` window (``(H, W)``, or one
    int for a square) at a uniform random offset (the CIFAR "crop 32, pad 4")."""

    def __init__(
        self,
        size: int | tuple[int, int],
        padding: int = 0,
        fill: float = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        pair = _pair(size)
        self.size = pair[0] if isinstance(size, numbers.Integral) else pair
        self.padding = _positive_int(padding, "padding", allow_zero=True)
        self.fill = fill
        self.generator = generator

    def sample_offset(self, height: int, width: int) -> tuple[int, int]:
        """Draw ``(top, left)`` in the padded image of an ``height × width`` input."""
        sh, sw = _pair(self.size)
        ph, pw = height + 2 * self.padding, width + 2 * self.padding
        if ph < sh or pw < sw:
            raise ValueError(
                f"RandomCrop({self.size}) needs a padded image of at least that size, got "
                f"{ph}x{pw} ({height}x{width} padded by {self.padding})"
            )
        top = torch.randint(ph - sh + 1, (1,), generator=self.generator)
        left = torch.randint(pw - sw + 1, (1,), generator=self.generator)
        return int(top), int(left)

    def __call__(self, x: Tensor) -> Tensor:
        _need_image(x, "RandomCrop")
        top, left = self.sample_offset(*x.shape[-2:])
        return crop(x, top, left, self.size, self.padding, self.fill)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, padding={self.padding}, fill={self.fill})"


class RandomHorizontalFlip:
    """Mirror the last axis with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p = float(p)
        self.generator = generator

    def __call__(self, x: Tensor) -> Tensor:
        _need_image(x, "RandomHorizontalFlip")
        if float(torch.rand(1, generator=self.generator)) < self.p:
            return x.flip(-1)
        return x.clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def cutout(x: Tensor, cy: int, cx: int, size: int) -> Tensor:
    """A copy of ``x`` with the ``size × size`` square centred at pixel ``(cy, cx)`` set to 0.

    The square spans rows ``cy - size//2 .. cy - size//2 + size - 1`` (columns alike), clipped
    at the borders, so a square near an edge zeroes fewer than ``size²`` pixels.
    """
    h, w = x.shape[-2:]
    y0, x0 = cy - size // 2, cx - size // 2
    out = x.clone()
    out[..., max(0, y0) : min(h, y0 + size), max(0, x0) : min(w, x0 + size)] = 0
    return out


class Cutout:
    """Zero a ``size × size`` square centred at a uniform random pixel (DeVries & Taylor 2017).

    Applied after normalisation, so the square takes the dataset's mean colour.
    ``size = 0`` returns an unchanged copy.
    """

    def __init__(self, size: int, generator: torch.Generator | None = None) -> None:
        self.size = _positive_int(size, "size", allow_zero=True)
        self.generator = generator

    def sample_centre(self, height: int, width: int) -> tuple[int, int]:
        """Draw the square's centre ``(cy, cx)``, uniform over the image's pixels."""
        cy = torch.randint(height, (1,), generator=self.generator)
        cx = torch.randint(width, (1,), generator=self.generator)
        return int(cy), int(cx)

    def __call__(self, x: Tensor) -> Tensor:
        _need_image(x, "Cutout")
        if self.size == 0:
            return x.clone()
        cy, cx = self.sample_centre(*x.shape[-2:])
        return cutout(x, cy, cx, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


# ---------------------------------------------------------------------------------------------
# AutoAugment (Cubuk et al., CVPR 2019)

# The CIFAR-10 policy: 25 sub-policies of two (operation, probability, magnitude bin 0..9).
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)

BINS = 10  # magnitudes are bins 0..9 spread linearly over each operation's range
_TRANSLATE_FRACTION = 150 / 331  # the paper's ±150 px on 331-px images, as a fraction of size
_SHEAR_MAX = 0.3
_ROTATE_MAX = 30.0
_ENHANCE_MAX = 0.9  # factor 1 ± 0.9
_SIGNED = frozenset(
    {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
    | {"Color", "Contrast", "Brightness", "Sharpness"}
)


def op_value(name: str, magnitude: int, height: int, width: int, negative: bool = False) -> float:
    """The argument of :func:`apply_op` for magnitude bin ``magnitude`` (0..9).

    Bin m spreads linearly over the range (fraction ``m / 9``): shear factor up to 0.3,
    translation up to 150/331 of the image side (rounded to whole pixels), rotation up to
    30°, enhancement factor ``1 ± 0.9`` (1 = unchanged), posterize 8 → 4 bits, solarize
    threshold 256 → 0. ``negative`` flips the direction of the signed operations (AutoAugment
    draws it at random); it is ignored by the others.
    """
    _check_op(name)
    if isinstance(magnitude, bool) or not isinstance(magnitude, numbers.Integral):
        raise TypeError(f"magnitude must be an int bin 0..{BINS - 1}, got {magnitude!r}")
    if not 0 <= magnitude < BINS:
        raise ValueError(f"magnitude must be a bin in 0..{BINS - 1}, got {magnitude}")
    level = magnitude / (BINS - 1)
    sign = -1.0 if negative and name in _SIGNED else 1.0
    if name in ("ShearX", "ShearY"):
        return sign * _SHEAR_MAX * level
    if name == "TranslateX":
        return sign * round(_TRANSLATE_FRACTION * width * level)
    if name == "TranslateY":
        return sign * round(_TRANSLATE_FRACTION * height * level)
    if name == "Rotate":
        return sign * _ROTATE_MAX * level
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return 1.0 + sign * _ENHANCE_MAX * level
    if name == "Posterize":
        return float(round(8 - 4 * level))
    if name == "Solarize":
        return 256.0 * (1 - level)
    return 0.0  # AutoContrast, Equalize, Invert take no magnitude


def apply_op(image: Tensor, name: str, value: float = 0.0, fill: int = 128) -> Tensor:
    """Apply AutoAugment operation ``name`` with argument ``value`` to a uint8 ``[C, H, W]``
    image (C = 1 or 3), returning a new uint8 tensor.

    ``value`` is what :func:`op_value` gives: ShearX a shear factor about the image centre
    (output pixel ``(y, x)`` reads input ``(y, x + value·(y - H/2))``: rows below the centre
    slide left for a positive value), ShearY likewise with the axes swapped; TranslateX/
    TranslateY whole pixels (positive: right / down); Rotate degrees counter-clockwise about
    the centre; Color, Contrast, Brightness, Sharpness an enhancement factor (1 = unchanged;
    0 = greyscale / uniform grey / black / smoothed); Posterize the bits kept; Solarize a
    threshold (pixels ``>= value`` are inverted). AutoContrast stretches each channel's
    range to 0..255, Equalize equalises each channel's histogram, Invert is ``255 - x``.
    Geometric operations resample with nearest neighbour and fill uncovered pixels with
    ``fill``.
    """
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise TypeError(
            f"AutoAugment operations take a uint8 image [C, H, W] with C = 1 or 3, got "
            f"{image.dtype} of shape {tuple(image.shape)}"
        )
    return AUTOAUGMENT_OPS[_check_op(name)](image, float(value), int(fill))


class AutoAugment:
    """AutoAugment with a fixed policy (default: the CIFAR-10 policy) on uint8 ``[C, H, W]``.

    Per call: one sub-policy uniformly at random, then each of its two operations with its
    probability, in a random direction for the signed ones. The draws, in order: the
    sub-policy (``torch.randint``), then four uniforms (``torch.rand(4)``): apply first op?,
    its direction, apply second op?, its direction.
    """

    def __init__(
        self,
        policy: Sequence[Sequence[tuple[str, float, int]]] = CIFAR10_POLICY,
        fill: int = 128,
        generator: torch.Generator | None = None,
    ) -> None:
        self.policy = tuple(tuple(tuple(op) for op in sub) for sub in policy)
        if not self.policy:
            raise ValueError("policy must hold at least one sub-policy")
        for sub in self.policy:
            for name, p, magnitude in sub:
                op_value(name, magnitude, 1, 1)  # validates the name and the bin
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"probability of {name} must lie in [0, 1], got {p}")
        self.fill = int(fill)
        self.generator = generator

    def sample(self, height: int, width: int) -> list[tuple[str, float]]:
        """Draw the operations for one image: ``[(name, value), ...]`` in order of application."""
        index = int(torch.randint(len(self.policy), (1,), generator=self.generator))
        sub = self.policy[index]
        draws = torch.rand(2 * len(sub), generator=self.generator).tolist()
        chosen = []
        for k, (name, p, magnitude) in enumerate(sub):
            if draws[2 * k] < p:
                negative = draws[2 * k + 1] < 0.5
                chosen.append((name, op_value(name, magnitude, height, width, negative)))
        return chosen

    def __call__(self, x: Tensor) -> Tensor:
        _need_image(x, "AutoAugment")
        out = x
        for name, value in self.sample(*x.shape[-2:]):
            out = apply_op(out, name, value, self.fill)
        return out.clone() if out is x else out

    def __repr__(self) -> str:
        policy = (
            "CIFAR10_POLICY"
            if self.policy == CIFAR10_POLICY
            else f"{len(self.policy)} sub-policies"
        )
        return f"{type(self).__name__}(policy={policy}, fill={self.fill})"


# --- the operations: uint8 [C, H, W] tensor, value, fill -> new uint8 tensor -----------------


def _to_pil(x: Tensor) -> Image.Image:
    array = x.detach().cpu().numpy()
    if array.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(array[0]))  # mode "L"
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))  # mode "RGB"


def _from_pil(image: Image.Image, like: Tensor) -> Tensor:
    array = np.array(image, dtype=np.uint8)  # a writable copy
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array)).to(like.device)


def _pil_op(fn: Callable[[Image.Image, float, int], Image.Image]) -> Callable:
    def op(x: Tensor, value: float, fill: int) -> Tensor:
        return _from_pil(fn(_to_pil(x), value, fill), x)

    return op


def _fillcolor(image: Image.Image, fill: int) -> int | tuple[int, ...]:
    return fill if image.mode == "L" else (fill,) * len(image.getbands())


def _shear(image: Image.Image, value: float, fill: int, axis: str) -> Image.Image:
    w, h = image.size
    # Image.transform maps each output pixel (x, y) to the input (a·x + b·y + c, d·x + e·y + f).
    if axis == "x":
        coefficients = (1, value, -value * h / 2, 0, 1, 0)
    else:
        coefficients = (1, 0, 0, value, 1, -value * w / 2)
    return image.transform(
        image.size,
        Image.Transform.AFFINE,
        coefficients,
        resample=Image.Resampling.NEAREST,
        fillcolor=_fillcolor(image, fill),
    )


def _rotate(image: Image.Image, value: float, fill: int) -> Image.Image:
    return image.rotate(value, resample=Image.Resampling.NEAREST, fillcolor=_fillcolor(image, fill))


def _translate(x: Tensor, value: float, fill: int, axis: str) -> Tensor:
    shift = int(round(value))
    dy, dx = (shift, 0) if axis == "y" else (0, shift)
    return translate(x, dy, dx, fill)


def _posterize(x: Tensor, value: float, fill: int) -> Tensor:
    bits = int(value)
    if not 0 <= bits <= 8:
        raise ValueError(f"Posterize keeps 0..8 bits, got {value}")
    mask = (0xFF << (8 - bits)) & 0xFF
    return x & mask


def _solarize(x: Tensor, value: float, fill: int) -> Tensor:
    return torch.where(x >= value, 255 - x, x)


def _invert(x: Tensor, value: float, fill: int) -> Tensor:
    return 255 - x


def _enhance(image: Image.Image, value: float, fill: int, kind: type) -> Image.Image:
    return kind(image).enhance(value)


def _autocontrast(x: Tensor, value: float, fill: int) -> Tensor:
    """Map each channel's ``[min, max]`` linearly onto ``[0, 255]`` (rounded, exact ends)."""
    wide = x.to(torch.int32)
    low = wide.amin(dim=(-2, -1), keepdim=True)
    span = wide.amax(dim=(-2, -1), keepdim=True) - low
    stretched = ((wide - low) * 255 + span // 2) // span.clamp(min=1)
    return torch.where(span > 0, stretched, wide).to(torch.uint8)


def _equalize(image: Image.Image, value: float, fill: int) -> Image.Image:
    return ImageOps.equalize(image)


AUTOAUGMENT_OPS: dict[str, Callable[[Tensor, float, int], Tensor]] = {
    "ShearX": _pil_op(partial(_shear, axis="x")),
    "ShearY": _pil_op(partial(_shear, axis="y")),
    "TranslateX": partial(_translate, axis="x"),
    "TranslateY": partial(_translate, axis="y"),
    "Rotate": _pil_op(_rotate),
    "Color": _pil_op(partial(_enhance, kind=ImageEnhance.Color)),
    "Posterize": _posterize,
    "Solarize": _solarize,
    "Contrast": _pil_op(partial(_enhance, kind=ImageEnhance.Contrast)),
    "Sharpness": _pil_op(partial(_enhance, kind=ImageEnhance.Sharpness)),
    "Brightness": _pil_op(partial(_enhance, kind=ImageEnhance.Brightness)),
    "AutoContrast": _autocontrast,
    "Equalize": _pil_op(_equalize),
    "Invert": _invert,
}


# ---------------------------------------------------------------------------------------------


def _check_op(name: str) -> str:
    if name not in AUTOAUGMENT_OPS:
        known = ", ".join(AUTOAUGMENT_OPS)
        raise ValueError(f"unknown AutoAugment operation {name!r}; known: {known}")
    return name


def _need_image(x: Tensor, what: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{what} expects an image [..., H, W], got shape {tuple(x.shape)}")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of a crop size given as one int (a square) or a pair of ints."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"size must be an int or (H, W), got {size!r}")
        return _positive_int(size[0], "size"), _positive_int(size[1], "size")
    side = _positive_int(size, "size")
    return side, side


def _positive_int(value: int, what: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return int(value)


def pipeline(
    size: int | tuple[int, int],
    stats: tuple[Sequence[float], Sequence[float]] | None,
    *,
    padding: int | None = None,
    flip: bool = False,
    autoaugment: bool = False,
    cutout: int = 0,
) -> Compose:
    """The uint8 → normalised float pipeline in SPEC §7 order.

    ``RandomCrop(size, padding)`` (when ``padding`` is not ``None``), ``RandomHorizontalFlip``
    (``flip``), :class:`AutoAugment` with the CIFAR-10 policy (``autoaugment``), ``ToFloat``,
    ``Normalize(*stats)`` (when ``stats`` is given), ``Cutout(cutout)`` (when ``cutout > 0``).
    With every option off it only converts (and normalises).
    """
    steps: list[Callable[[Tensor], Tensor]] = []
    if padding is not None:
        steps.append(RandomCrop(size, padding))
    if flip:
        steps.append(RandomHorizontalFlip())
    if autoaugment:
        steps.append(AutoAugment())
    steps.append(ToFloat())
    if stats is not None:
        steps.append(Normalize(*stats))
    if cutout:
        steps.append(Cutout(cutout))
    return Compose(steps)
