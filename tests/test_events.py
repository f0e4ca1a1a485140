"""Tests for spikecut.data.events: each reader on files written here in the real byte format.

The encoders below build the bytes field by field with ``struct`` from the published format
descriptions, independently of the readers under test.
"""

from __future__ import annotations

import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from spikecut.data.events import (
    EVENT_DTYPE,
    EventFileError,
    as_events,
    cut_by_labels,
    guess_format,
    make_events,
    read_dvs_gesture,
    read_events,
    read_gesture_labels,
)

# ---------------------------------------------------------------------------------------------
# Encoders of the real formats (also used by test_event_datasets.py)


def encode_aedat2(events: np.ndarray) -> bytes:
    """AEDAT 2.0: '#' header lines, then big-endian uint32 (address, timestamp) pairs."""
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Test\r\n"
    body = b""
    for e in events:
        address = (int(e["y"]) << 8) | (int(e["x"]) << 1) | int(e["p"])
        body += struct.pack(">II", address, int(e["t"]))
    return header + body


def encode_atis(events: np.ndarray) -> bytes:
    """ATIS .bin: x, y, (p << 7) | t[22:16], t[15:8], t[7:0]."""
    out = b""
    for e in events:
        t = int(e["t"])
        out += bytes([int(e["x"]), int(e["y"]), (int(e["p"]) << 7) | (t >> 16) & 0x7F])
        out += bytes([(t >> 8) & 0xFF, t & 0xFF])
    return out


AEDAT3_HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def aedat3_packet(kind: int, words: list[tuple[int, int]], overflow: int = 0) -> bytes:
    """One AEDAT 3.1 packet of 8-byte events ``(data uint32, timestamp int32)``."""
    n = len(words)
    header = struct.pack("<hhiiiiii", kind, 1, 8, 4, overflow, n, n, n)
    return header + b"".join(struct.pack("<Ii", d, ts) for d, ts in words)


def polarity_word(x: int, y: int, p: int, valid: int = 1) -> int:
    return (x << 17) | (y << 2) | (p << 1) | valid


def encode_aedat3(events: np.ndarray, per_packet: int = 3) -> bytes:
    """AEDAT 3.1 polarity packets of ``per_packet`` events (t below 2**31)."""
    out = AEDAT3_HEADER
    for i in range(0, len(events), per_packet):
        chunk = events[i : i + per_packet]
        words = [(polarity_word(int(e["x"]), int(e["y"]), int(e["p"])), int(e["t"])) for e in chunk]
        out += aedat3_packet(1, words)
    return out


def gesture_csv(rows: list[tuple[int, int, int]]) -> str:
    return "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in rows)


def sample_events(n: int = 40, width: int = 128, height: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 2_000_000, n))
    return make_events(
        rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n)
    )


def assert_same_events(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == EVENT_DTYPE
    for field in "xytp":
        np.testing.assert_array_equal(got[field], expected[field], err_msg=field)


# ---------------------------------------------------------------------------------------------
# AEDAT 2.0


def test_aedat2_round_trip_and_bit_layout(tmp_path: Path) -> None:
    events = sample_events()
    path = tmp_path / "cifar10_cat_0.aedat"
    path.write_bytes(encode_aedat2(events))
    assert guess_format(path) == "aedat2"
    assert_same_events(read_events(path), events)
    # One hand-packed record: address 0x0305 -> x = 0x04 >> 1 = 2, y = 3, p = 1.
    single = tmp_path / "one.aedat"
    single.write_bytes(b"#!AER-DAT2.0\r\n" + struct.pack(">II", 0x0305, 77))
    got = read_events(single)
    assert (got["x"][0], got["y"][0], got["t"][0], got["p"][0]) == (2, 3, 77, 1)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"#!AER-DAT2.0\r\n", "no events"),
        (b"#!AER-DAT2.0\r\n" + b"\x00" * 12, "truncated"),
        (b"#!AER-DAT3.1\r\n" + b"\x00" * 16, "expected a first line"),
        (b"#!AER-DAT2.0 no newline", "truncated"),
    ],
)
def test_aedat2_bad_files_name_file_and_problem(tmp_path: Path, content: bytes, problem: str):
    path = tmp_path / "bad.aedat"
    path.write_bytes(content)
    with pytest.raises(EventFileError, match=problem) as info:
        read_events(path, format="aedat2")
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# ATIS .bin


def test_atis_round_trip(tmp_path: Path) -> None:
    events = sample_events(width=34, height=34)
    events["t"] %= 1 << 23
    events = events[np.argsort(events["t"], kind="stable")]
    path = tmp_path / "00002.bin"
    path.write_bytes(encode_atis(events))
    assert guess_format(path) == "atis"
    assert_same_events(read_events(path), events)


def test_atis_hand_packed_bytes_and_overflow_marker(tmp_path: Path) -> None:
    # x=3, y=4, ON, t = 0x01_0203; then an overflow marker (y = 240); then x=5, y=6, OFF, t=9.
    raw = bytes([3, 4, 0x80 | 0x01, 0x02, 0x03, 0, 240, 0, 0, 0, 5, 6, 0x00, 0x00, 0x09])
    path = tmp_path / "image_0001.bin"
    path.write_bytes(raw)
    got = read_events(path)
    assert got["x"].tolist() == [3, 5] and got["y"].tolist() == [4, 6]
    assert got["p"].tolist() == [1, 0]
    assert got["t"].tolist() == [0x010203, 9 + (1 << 23)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (bytes(12), "truncated"),
        (b"#!AER-DAT2.0\r\n" + bytes(6), "wrong format"),
    ],
)
def test_atis_bad_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(EventFileError, match=problem) as info:
        read_events(path, format="atis")
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# AEDAT 3.1 (DVS128 Gesture) and its label CSV


def test_aedat3_packets_overflow_invalid_and_other_types(tmp_path: Path) -> None:
    body = aedat3_packet(1, [(polarity_word(1, 2, 1), 100), (polarity_word(3, 4, 0), 200)])
    body += aedat3_packet(0, [(0xDEADBEEF, 150)])  # a special-event packet: skipped
    body += aedat3_packet(
        1,
        [(polarity_word(5, 6, 1, valid=0), 250), (polarity_word(127, 127, 0), 5)],
        overflow=1,
    )
    path = tmp_path / "user01_fluorescent.aedat"
    path.write_bytes(AEDAT3_HEADER + body)
    assert guess_format(path) == "aedat3"
    got = read_events(path)
    assert got["x"].tolist() == [1, 3, 127]
    assert got["y"].tolist() == [2, 4, 127]
    assert got["p"].tolist() == [1, 0, 0]
    assert got["t"].tolist() == [100, 200, 5 + (1 << 31)]


@pytest.mark.parametrize(("cut", "problem"), [(4, "needs 24 bytes"), (40, "packet header at byte")])
def test_aedat3_truncated(tmp_path: Path, cut: int, problem: str) -> None:
    events = sample_events(n=6)
    data = encode_aedat3(events)  # two packets of 28 + 24 bytes
    path = tmp_path / "user02_led.aedat"
    path.write_bytes(data[:-cut])
    with pytest.raises(EventFileError, match="truncated") as info:
        read_events(path)
    assert problem in str(info.value) and str(path) in str(info.value)


def test_aedat3_header_problems(tmp_path: Path) -> None:
    path = tmp_path / "x.aedat"
    path.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
    with pytest.raises(EventFileError, match="END-HEADER"):
        read_events(path)
    path.write_bytes(AEDAT3_HEADER)
    with pytest.raises(EventFileError, match="no event packets"):
        read_events(path)
    path.write_bytes(AEDAT3_HEADER + aedat3_packet(0, [(1, 1)]))
    with pytest.raises(EventFileError, match="no polarity"):
        read_events(path)


def test_dvs_gesture_cut_into_labelled_gestures(tmp_path: Path) -> None:
    events = make_events(
        x=[1, 2, 3, 4, 5, 6], y=[0] * 6, t=[10, 20, 30, 40, 50, 60], p=[1, 0, 1, 0, 1, 0]
    )
    aedat = tmp_path / "user03_natural.aedat"
    aedat.write_bytes(encode_aedat3(events))
    csv = tmp_path / "user03_natural_labels.csv"
    csv.write_text(gesture_csv([(3, 10, 30), (11, 30, 61)]))
    gestures = read_dvs_gesture(aedat)
    assert [label for _, label in gestures] == [2, 10]
    assert gestures[0][0]["x"].tolist() == [1, 2]  # t = 30 belongs to the next gesture
    assert gestures[1][0]["x"].tolist() == [3, 4, 5, 6]
    # The same cut from the parsed table directly.
    cut = cut_by_labels(events, read_gesture_labels(csv))
    assert [len(e) for e, _ in cut] == [2, 4]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("label,start,end\n1,0,5\n", "expected the header"),
        ("class,startTime_usec,endTime_usec\n", "no gestures"),
        ("class,startTime_usec,endTime_usec\n12,0,5\n", "line 2"),
        ("class,startTime_usec,endTime_usec\n1,5\n", "expected 3 integers"),
    ],
)
def test_gesture_label_csv_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "user01_led_labels.csv"
    path.write_text(text)
    with pytest.raises(EventFileError, match=problem):
        read_gesture_labels(path)


# ---------------------------------------------------------------------------------------------
# DVS128 Gesture .npy re-encoding


def test_gesture_npy_converts_ms_to_us(tmp_path: Path) -> None:
    table = np.array([[1, 2, 1, 0.5], [3, 4, 0, 1.25], [127, 0, 1, 2000.0]])  # x, y, p, t ms
    path = tmp_path / "3.npy"
    np.save(path, table)
    got = read_events(path)
    assert got["x"].tolist() == [1, 3, 127] and got["y"].tolist() == [2, 4, 0]
    assert got["p"].tolist() == [1, 0, 1]
    assert got["t"].tolist() == [500, 1250, 2_000_000]


def test_gesture_npy_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "0.npy"
    np.save(path, np.zeros((5, 4)))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(EventFileError, match="truncated") as info:
        read_events(path)
    assert str(path) in str(info.value)
    np.save(path, np.zeros((5, 3)))
    with pytest.raises(EventFileError, match=r"\[N, 4\]"):
        read_events(path)
    np.save(path, np.zeros((0, 4)))
    with pytest.raises(EventFileError, match="no events"):
        read_events(path)
    path.write_bytes(b"#!AER-DAT2.0\r\n")
    with pytest.raises(EventFileError, match="expected a first line|no events"):
        read_events(path)


# ---------------------------------------------------------------------------------------------
# AEDAT4 through the optional `aedat` package


def test_aedat4_without_package_names_it(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.aedat4"
    path.write_bytes(b"#!AER-DAT4.0\r\n")
    monkeypatch.setitem(sys.modules, "aedat", None)  # makes `import aedat` fail
    with pytest.raises(ImportError, match="'aedat'.*pip install aedat"):
        read_events(path)


def test_aedat4_through_decoder(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.aedat4"
    path.write_bytes(b"#!AER-DAT4.0\r\n")
    dtype = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
    packets = [
        {"stream_id": 0, "events": np.array([(5, 1, 2, True), (6, 3, 4, False)], dtype)},
        {"stream_id": 1, "frame": {}},
        {"stream_id": 0, "events": np.array([(9, 7, 8, True)], dtype)},
    ]
    fake = types.ModuleType("aedat")
    fake.Decoder = lambda p: iter(packets) if Path(p) == path else iter(())
    monkeypatch.setitem(sys.modules, "aedat", fake)
    got = read_events(path)
    assert got["t"].tolist() == [5, 6, 9] and got["x"].tolist() == [1, 3, 7]
    assert got["y"].tolist() == [2, 4, 8] and got["p"].tolist() == [1, 0, 1]


# ---------------------------------------------------------------------------------------------
# Format guessing and Tonic-style arrays


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(EventFileError, match="cannot tell the event format") as info:
        read_events(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="nothere.bin"):
        read_events(tmp_path / "nothere.bin")
    with pytest.raises(ValueError, match="unknown event format 'dat'"):
        read_events(path, format="dat")


def test_as_events_accepts_tonic_dtypes() -> None:
    tonic = np.dtype([("t", "<i8"), ("x", "<i8"), ("y", "<i8"), ("p", "?")])
    raw = np.array([(10, 1, 2, True), (20, 3, 4, False)], dtype=tonic)
    got = as_events(raw)
    assert got.dtype == EVENT_DTYPE
    assert got["x"].tolist() == [1, 3] and got["t"].tolist() == [10, 20]
    assert got["p"].tolist() == [1, 0]
    signed = np.array([(1, 1, 1, -1), (2, 1, 1, 1)], dtype=[(f, "<i4") for f in "xytp"])
    assert as_events(signed)["p"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="missing"):
        as_events(np.zeros(3, dtype=[("x", "<i2"), ("y", "<i2")]))
