"""Tests for spikecut.data.augment: each augmentation's effect on a known image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikecut.data import (
    AUTOAUGMENT_OPS,
    CIFAR10_POLICY,
    AutoAugment,
    Cutout,
    RandomCrop,
    RandomHorizontalFlip,
    ToFloat,
    apply_op,
    op_value,
)
from spikecut.data.augment import crop, cutout, pipeline


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(c: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    """A uint8 image whose every pixel differs from its neighbours (values wrap at 256)."""
    return (torch.arange(c * h * w) % 251).to(torch.uint8).reshape(c, h, w)


def noise(seed: int = 0, low: int = 0, high: int = 256) -> torch.Tensor:
    return torch.randint(low, high, (3, 32, 32), dtype=torch.uint8, generator=gen(seed))


# --- ToFloat, crop, flip ---------------------------------------------------------------------


def test_to_float_scales_bytes_to_unit_range() -> None:
    x = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    y = ToFloat()(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([[[0.0, 0.2, 1.0]]]))
    with pytest.raises(TypeError, match="uint8"):
        ToFloat()(y)


def test_random_crop_equals_the_padded_image_at_the_drawn_offset() -> None:
    x = ramp()
    padded = F.pad(x, (4, 4, 4, 4), value=7)  # built independently of the code under test
    seen = set()
    for seed in range(40):
        top, left = RandomCrop(32, 4, fill=7, generator=gen(seed)).sample_offset(32, 32)
        out = RandomCrop(32, 4, fill=7, generator=gen(seed))(x)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        assert torch.equal(out, padded[:, top : top + 32, left : left + 32])
        assert 0 <= top <= 8 and 0 <= left <= 8
        seen.add((top, left))
    assert len(seen) > 20  # offsets are drawn, not fixed
    assert torch.equal(x, ramp())  # input untouched


def test_crop_padding_fill_and_bounds() -> None:
    x = torch.full((1, 4, 4), 200, dtype=torch.uint8)
    corner = crop(x, 0, 0, 4, padding=2, fill=9)
    assert corner[0, :2].eq(9).all() and corner[0, :, :2].eq(9).all()
    assert corner[0, 2:, 2:].eq(200).all()
    assert torch.equal(crop(x, 2, 2, 4, padding=2), x)
    with pytest.raises(ValueError, match="does not fit"):
        crop(x, 5, 0, 4, padding=2)
    with pytest.raises(ValueError, match="at least that size"):
        RandomCrop(10, padding=2)(x)


def test_horizontal_flip_is_an_exact_mirror_or_a_copy() -> None:
    x = ramp()
    mirrored = x[:, :, torch.arange(31, -1, -1)]
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), mirrored)
    same = RandomHorizontalFlip(p=0.0)(x)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    outcomes = [torch.equal(RandomHorizontalFlip(generator=gen(s))(x), mirrored) for s in range(40)]
    again = [torch.equal(RandomHorizontalFlip(generator=gen(s))(x), mirrored) for s in range(40)]
    assert outcomes == again and 5 < sum(outcomes) < 35
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RandomHorizontalFlip(p=1.5)


# --- cutout ---------------------------------------------------------------------------------


def test_cutout_zeroes_exactly_a_square_away_from_borders_and_clips_at_a_corner() -> None:
    x = torch.ones(3, 32, 32)
    out = cutout(x, 16, 16, 16)
    zero = out == 0
    assert int(zero.sum()) == 3 * 16 * 16
    assert zero[:, 8:24, 8:24].all()
    assert x.eq(1).all()  # input untouched
    corner = cutout(x, 0, 0, 16)
    assert int((corner == 0).sum()) == 3 * 8 * 8 and (corner[:, :8, :8] == 0).all()
    far = cutout(x, 31, 31, 16)  # rows/columns 23..38, clipped to 23..31
    assert int((far == 0).sum()) == 3 * 9 * 9 and (far[:, 23:, 23:] == 0).all()


def test_random_cutout_uses_the_drawn_centre() -> None:
    x = torch.randn(3, 32, 32, generator=gen(1)) + 10  # no zeros before cutout
    for seed in range(10):
        cy, cx = Cutout(16, generator=gen(seed)).sample_centre(32, 32)
        out = Cutout(16, generator=gen(seed))(x)
        assert torch.equal(out, cutout(x, cy, cx, 16))
        rows = slice(max(0, cy - 8), min(32, cy + 8))
        cols = slice(max(0, cx - 8), min(32, cx + 8))
        assert (out[:, rows, cols] == 0).all()
        n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
        assert int((out == 0).sum()) == 3 * n_rows * n_cols
    unchanged = Cutout(0)(x)
    assert torch.equal(unchanged, x) and unchanged.data_ptr() != x.data_ptr()


# --- AutoAugment operations -----------------------------------------------------------------


def test_invert_solarize_posterize() -> None:
    x = ramp()
    assert torch.equal(apply_op(x, "Invert"), (255 - x.int()).to(torch.uint8))
    sol = apply_op(x, "Solarize", 128)
    high = x >= 128
    assert torch.equal(sol[high], 255 - x[high]) and torch.equal(sol[~high], x[~high])
    assert torch.equal(apply_op(x, "Solarize", 256), x)
    post = apply_op(x, "Posterize", 4)
    assert torch.equal(post, x - x % 16)
    assert torch.equal(apply_op(x, "Posterize", 8), x)
    assert set(apply_op(x, "Posterize", 1).unique().tolist()) == {0, 128}


def test_equalize_spreads_a_two_level_image_to_black_and_white() -> None:
    x = torch.full((3, 32, 32), 50, dtype=torch.uint8)
    x[:, :, 16:] = 200
    out = apply_op(x, "Equalize")
    assert (out[:, :, :16] == 0).all() and (out[:, :, 16:] == 255).all()


def test_autocontrast_stretches_each_channel_to_the_full_range() -> None:
    x = noise(3, 50, 101)
    x[0, 0, 0], x[0, 0, 1] = 50, 100  # channel 0 spans exactly 50..100
    out = apply_op(x, "AutoContrast")
    assert out.amin(dim=(1, 2)).tolist() == [0, 0, 0]
    assert out.amax(dim=(1, 2)).tolist() == [255, 255, 255]
    # linear in each channel: 75 (the middle of 50..100) lands in the middle of 0..255
    mid = x[0] == 75
    assert mid.any() and out[0][mid].unique().tolist() == [128]
    flat = torch.full((3, 4, 4), 90, dtype=torch.uint8)
    assert torch.equal(apply_op(flat, "AutoContrast"), flat)


def test_translate_shifts_by_whole_pixels_and_fills() -> None:
    x = ramp()
    right = apply_op(x, "TranslateX", 3, fill=128)
    assert torch.equal(right[:, :, 3:], x[:, :, :-3]) and (right[:, :, :3] == 128).all()
    up = apply_op(x, "TranslateY", -2, fill=0)
    assert torch.equal(up[:, :-2], x[:, 2:]) and (up[:, -2:] == 0).all()


def test_rotate_turns_counter_clockwise_about_the_centre() -> None:
    x = ramp()
    assert torch.equal(apply_op(x, "Rotate", 90), torch.rot90(x, 1, dims=(1, 2)))
    assert torch.equal(apply_op(x, "Rotate", -90), torch.rot90(x, -1, dims=(1, 2)))
    tilted = apply_op(x, "Rotate", 30, fill=77)
    for y, x_ in [(0, 0), (0, 31), (31, 0), (31, 31)]:  # corners leave the frame
        assert (tilted[:, y, x_] == 77).all()
    assert torch.equal(tilted[:, 16, 16], x[:, 16, 16])  # the centre stays


def test_shear_slides_rows_about_the_centre() -> None:
    x = torch.zeros(1, 32, 32, dtype=torch.uint8)
    x[0, :, 16] = 255  # a vertical line
    out = apply_op(x, "ShearX", 0.3, fill=0)
    cols = [int(out[0, r].nonzero()[0]) for r in (0, 16, 31)]
    # row r reads input column x + 0.3·(r - 16): the top row moves right, the bottom left
    assert cols[1] == 16 and 4 <= cols[0] - 16 <= 5 and 4 <= 16 - cols[2] <= 5
    assert int((out == 255).sum()) == 32  # every row keeps its one line pixel
    line = torch.zeros(1, 32, 32, dtype=torch.uint8)
    line[0, 16, :] = 255  # a horizontal line, sheared vertically
    rows = apply_op(line, "ShearY", 0.3, fill=0)[0].nonzero()
    by_col = {int(c): int(r) for r, c in rows}
    assert by_col[16] == 16 and 4 <= by_col[0] - 16 <= 5 and 4 <= 16 - by_col[31] <= 5


def test_enhancements() -> None:
    x = noise(5)
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert torch.equal(apply_op(x, name, 1.0), x), name
    assert (apply_op(x, "Brightness", 0.0) == 0).all()
    grey = apply_op(x, "Color", 0.0)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert apply_op(x, "Contrast", 0.0).unique().numel() == 1
    half = apply_op(x, "Brightness", 0.5).int()
    assert (half - x.int() // 2).abs().max() <= 1
    flat = torch.full((3, 8, 8), 60, dtype=torch.uint8)
    assert torch.equal(apply_op(flat, "Sharpness", 1.9), flat)
    sharp = apply_op(x, "Sharpness", 1.9)
    assert not torch.equal(sharp, x)
    assert torch.equal(sharp[:, 0], x[:, 0])  # PIL leaves the border pixels as they were


def test_every_operation_returns_a_new_uint8_image_and_leaves_the_input() -> None:
    x = noise(7)
    kept = x.clone()
    for name in AUTOAUGMENT_OPS:
        out = apply_op(x, name, op_value(name, 5, 32, 32))
        assert out.dtype == torch.uint8 and out.shape == x.shape, name
        assert out.data_ptr() != x.data_ptr(), name
    assert torch.equal(x, kept)
    gray = apply_op(x[:1], "Rotate", 90)  # single-channel images work too
    assert torch.equal(gray, torch.rot90(x[:1], 1, dims=(1, 2)))
    with pytest.raises(TypeError, match="uint8"):
        apply_op(x.float(), "Invert")
    with pytest.raises(ValueError, match="unknown AutoAugment operation 'Blur'"):
        apply_op(x, "Blur")


def test_magnitude_bins_span_the_standard_ranges() -> None:
    top = {n: op_value(n, 9, 32, 32) for n in AUTOAUGMENT_OPS}
    assert top["ShearX"] == pytest.approx(0.3) and top["Rotate"] == pytest.approx(30)
    assert top["TranslateX"] == round(150 / 331 * 32) == 15
    assert top["Color"] == pytest.approx(1.9) and top["Posterize"] == 4 and top["Solarize"] == 0
    assert op_value("Color", 9, 32, 32, negative=True) == pytest.approx(0.1)
    assert op_value("Rotate", 9, 32, 32, negative=True) == pytest.approx(-30)
    assert op_value("Solarize", 9, 32, 32, negative=True) == 0  # unsigned ops ignore it
    assert op_value("TranslateY", 9, 64, 32) == round(150 / 331 * 64)  # rows scale with H
    bottom = {n: op_value(n, 0, 32, 32) for n in ("ShearY", "Rotate", "Brightness", "Posterize")}
    assert bottom == {"ShearY": 0, "Rotate": 0, "Brightness": 1.0, "Posterize": 8}
    assert op_value("Solarize", 0, 32, 32) == 256
    with pytest.raises(ValueError, match="0..9"):
        op_value("Rotate", 10, 32, 32)


# --- the policy ------------------------------------------------------------------------------


def test_cifar10_policy_shape() -> None:
    assert len(CIFAR10_POLICY) == 25
    for sub in CIFAR10_POLICY:
        assert len(sub) == 2
        for name, p, magnitude in sub:
            assert name in AUTOAUGMENT_OPS and 0 <= p <= 1 and 0 <= magnitude <= 9
    assert CIFAR10_POLICY[0] == (("Invert", 0.1, 7), ("Contrast", 0.2, 6))


def test_autoaugment_is_deterministic_under_a_seed_and_varies_without() -> None:
    images = [noise(s) for s in range(30)]
    first = AutoAugment(generator=gen(3))
    second = AutoAugment(generator=gen(3))
    out_a = [first(x) for x in images]
    out_b = [second(x) for x in images]
    assert all(torch.equal(a, b) for a, b in zip(out_a, out_b, strict=True))
    changed = sum(not torch.equal(a, x) for a, x in zip(out_a, images, strict=True))
    assert 5 < changed < 30  # some images are augmented, some draws apply nothing
    other = [AutoAugment(generator=gen(4))(x) for x in images]
    assert any(not torch.equal(a, o) for a, o in zip(out_a, other, strict=True))
    torch.manual_seed(11)
    global_a = [AutoAugment()(x) for x in images]
    torch.manual_seed(11)
    global_b = [AutoAugment()(x) for x in images]
    assert all(torch.equal(a, b) for a, b in zip(global_a, global_b, strict=True))


def test_autoaugment_applies_the_sampled_operations_in_order() -> None:
    x = noise(2)
    sure = AutoAugment(policy=[(("Invert", 1.0, 0), ("Posterize", 1.0, 9))])
    assert sure.sample(32, 32) == [("Invert", 0.0), ("Posterize", 4.0)]
    assert torch.equal(sure(x), (255 - x) & 0xF0)
    never = AutoAugment(policy=[(("Invert", 0.0, 0), ("Rotate", 0.0, 9))])
    out = never(x)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    for seed in range(10):
        ops = AutoAugment(generator=gen(seed)).sample(32, 32)
        expected = x
        for name, value in ops:
            expected = apply_op(expected, name, value)
        assert torch.equal(AutoAugment(generator=gen(seed))(x), expected)
    with pytest.raises(ValueError, match="probability"):
        AutoAugment(policy=[(("Invert", 1.5, 0),)])


def test_reprs_and_pipeline_order() -> None:
    assert repr(RandomCrop(32, 4)) == "RandomCrop(size=32, padding=4, fill=0)"
    assert repr(RandomHorizontalFlip()) == "RandomHorizontalFlip(p=0.5)"
    assert repr(Cutout(16)) == "Cutout(size=16)"
    assert repr(AutoAugment()) == "AutoAugment(policy=CIFAR10_POLICY, fill=128)"
    stats = ((0.5,) * 3, (0.25,) * 3)
    full = pipeline(32, stats, padding=4, flip=True, autoaugment=True, cutout=16)
    names = [type(t).__name__ for t in full.transforms]
    expected = ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "ToFloat", "Normalize"]
    assert names == [*expected, "Cutout"]
    plain = pipeline(32, None)
    x = noise(1)
    assert torch.equal(plain(x), x.float() / 255)
