"""Event-camera recordings as numpy structured arrays with fields ``x, y, t, p``.

``t`` is in microseconds (int64), ``p`` is the polarity (1 = ON, 0 = OFF). Readers for the
published on-disk formats live here too:

* ``aedat2``: CIFAR10-DVS original release (first line ``#!AER-DAT2``);
* ``aedat3``: DVS128 Gesture with its ``*_labels.csv`` (first line ``#!AER-DAT3``);
* ``atis``: N-MNIST and N-Caltech101 ``.bin`` files;
* ``gesture-npy``: the per-sample ``.npy`` re-encoding of DVS128 Gesture;
* ``aedat4``: e.g. the CIFAR10-DVS re-encoding, through the optional ``aedat`` package
  (first line ``#!AER-DAT4``).

Every reader returns the events exactly as the file stores them (no mirroring, no
re-ordering). Truncated, empty or wrong-format files raise :class:`EventFileError`, whose
message names the file and the problem.
"""

from __future__ import annotations

import csv
import importlib
import os
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "EVENT_DTYPE",
    "EVENT_FORMATS",
    "EventFileError",
    "as_events",
    "cut_by_labels",
    "guess_format",
    "make_events",
    "read_aedat2",
    "read_aedat3",
    "read_aedat4",
    "read_atis_bin",
    "read_dvs_gesture",
    "read_events",
    "read_gesture_labels",
    "read_gesture_npy",
]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])

PathLike = str | os.PathLike

# ATIS .bin: an event with y == 240 marks a wrap of the 23-bit timestamp field.
_ATIS_OVERFLOW_Y = 240
_ATIS_TS_BITS = 23

# AEDAT 3.1 packet header: eventType, eventSource (int16), then six int32 fields.
_AEDAT3_HEADER = struct.Struct("<hhiiiiii")
_AEDAT3_POLARITY = 1
_AEDAT3_POLARITY_SIZE = 8


class EventFileError(ValueError):
    """An event file that cannot be decoded: truncated, empty or not in the expected format."""

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def make_events(x, y, t, p) -> np.ndarray:
    """Pack equal-length coordinate, timestamp (µs) and polarity arrays into ``EVENT_DTYPE``."""
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    if not (x.shape == y.shape == t.shape == p.shape) or x.ndim != 1:
        raise ValueError(
            "make_events expects four 1-D arrays of equal length, got shapes "
            f"x{x.shape} y{y.shape} t{t.shape} p{p.shape}"
        )
    events = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


def as_events(events: np.ndarray) -> np.ndarray:
    """Convert any structured array with fields ``x, y, t, p`` (e.g. Tonic's) to ``EVENT_DTYPE``.

    Field order and integer/bool dtypes may differ; polarities other than 0/1 (e.g. -1/+1)
    are mapped to OFF (<= 0) and ON (> 0).
    """
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [f for f in "xytp" if f not in names]
    if missing:
        raise ValueError(
            "events must be a structured array with fields x, y, t, p; "
            f"found fields {list(names)} (missing {missing})"
        )
    if events.dtype == EVENT_DTYPE:
        return events
    p = np.asarray(events["p"])
    return make_events(events["x"], events["y"], events["t"], (p > 0).astype(np.int8))


EVENT_FORMATS = ("aedat2", "aedat3", "aedat4", "atis", "gesture-npy")

_MAGIC_TO_FORMAT = {b"#!AER-DAT2": "aedat2", b"#!AER-DAT3": "aedat3", b"#!AER-DAT4": "aedat4"}
_SUFFIX_TO_FORMAT = {".bin": "atis", ".npy": "gesture-npy", ".aedat4": "aedat4"}


def guess_format(path: PathLike) -> str:
    """The format of ``path``: from its first line if it is an AEDAT file, else its suffix."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    for magic, fmt in _MAGIC_TO_FORMAT.items():
        if head.startswith(magic):
            return fmt
    fmt = _SUFFIX_TO_FORMAT.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if not head:
        raise EventFileError(path, "file is empty")
    raise EventFileError(
        path,
        f"cannot tell the event format: first bytes {head[:12]!r} match no AEDAT header "
        f"(#!AER-DAT2/3/4) and the suffix {path.suffix!r} is not .bin/.npy/.aedat4; "
        f"pass format= one of {', '.join(EVENT_FORMATS)}",
    )


def read_events(path: PathLike, format: str | None = None) -> np.ndarray:
    """Read one recording as an ``EVENT_DTYPE`` array; ``format=None`` guesses it.

    For DVS128 Gesture AEDAT 3.1 files this is the whole recording; use
    :func:`read_dvs_gesture` to cut it into labelled gestures.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event file not found: {path}")
    fmt = guess_format(path) if format is None else format
    readers = {
        "aedat2": read_aedat2,
        "aedat3": read_aedat3,
        "aedat4": read_aedat4,
        "atis": read_atis_bin,
        "gesture-npy": read_gesture_npy,
    }
    if fmt not in readers:
        raise ValueError(f"unknown event format {fmt!r}; known: {', '.join(EVENT_FORMATS)}")
    return readers[fmt](path)


# ---------------------------------------------------------------------------------------------
# AEDAT 2.0 and 3.1: a text header of '#' lines, then binary data


def _split_header(path: Path, data: bytes, magic: bytes, end_line: bytes | None = None) -> int:
    """Offset of the first byte after the ``#`` header; checks the first line's ``magic``."""
    if not data:
        raise EventFileError(path, "file is empty")
    first = data.split(b"\n", 1)[0][:40]
    if not data.startswith(magic):
        raise EventFileError(
            path, f"wrong format: expected a first line starting {magic!r}, found {first!r}"
        )
    pos = 0
    while data.startswith(b"#", pos):
        newline = data.find(b"\n", pos)
        if newline < 0:
            raise EventFileError(path, "truncated: the text header has no final newline")
        line = data[pos : newline + 1]
        pos = newline + 1
        if end_line is not None and line.rstrip(b"\r\n") == end_line:
            return pos
    if end_line is not None:
        raise EventFileError(path, f"truncated or corrupt header: no {end_line.decode()} line")
    return pos


def read_aedat2(path: PathLike) -> np.ndarray:
    """AEDAT 2.0 (CIFAR10-DVS): big-endian uint32 (address, timestamp µs) pairs.

    ``x = (a & 0xFE) >> 1``, ``y = (a & 0x7F00) >> 8``, ``p = a & 1``. The x axis is returned
    as stored (CIFAR10-DVS images appear mirrored; the dataset flips them, see
    :mod:`spikecut.data.event_datasets`).
    """
    path = Path(path)
    data = path.read_bytes()
    body = memoryview(data)[_split_header(path, data, b"#!AER-DAT2") :]
    if len(body) == 0:
        raise EventFileError(path, "no events after the header")
    if len(body) % 8:
        raise EventFileError(
            path,
            f"truncated: {len(body)} bytes of event data is not a whole number of 8-byte "
            "(address, timestamp) records",
        )
    records = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    address, t = records[:, 0], records[:, 1]
    return make_events((address & 0xFE) >> 1, (address & 0x7F00) >> 8, t, address & 1)


def read_aedat3(path: PathLike) -> np.ndarray:
    """AEDAT 3.1 polarity events (DVS128 Gesture), whole recording, packets concatenated.

    Each packet is a 28-byte little-endian header (eventType, eventSource, eventSize,
    eventTSOffset, eventTSOverflow, eventCapacity, eventNumber, eventValid) followed by
    ``eventCapacity * eventSize`` bytes. Polarity packets (type 1) hold 8-byte events:
    uint32 data (bit 0 valid, bit 1 polarity, bits 2.. y, bits 17.. x) and an int32
    timestamp, extended by ``eventTSOverflow << 31``. Other packet types and events whose
    valid bit is clear are skipped.
    """
    path = Path(path)
    data = path.read_bytes()
    pos = _split_header(path, data, b"#!AER-DAT3", end_line=b"#!END-HEADER")
    if pos == len(data):
        raise EventFileError(path, "no event packets after the header")
    chunks: list[np.ndarray] = []
    while pos < len(data):
        if len(data) - pos < _AEDAT3_HEADER.size:
            raise EventFileError(
                path,
                f"truncated: packet header at byte {pos} has {len(data) - pos} of "
                f"{_AEDAT3_HEADER.size} bytes",
            )
        kind, _, size, _, overflow, capacity, number, _ = _AEDAT3_HEADER.unpack_from(data, pos)
        pos += _AEDAT3_HEADER.size
        if size <= 0 or capacity < 0 or not 0 <= number <= capacity:
            raise EventFileError(
                path,
                f"corrupt packet header at byte {pos - _AEDAT3_HEADER.size}: eventSize={size}, "
                f"eventCapacity={capacity}, eventNumber={number}",
            )
        end = pos + capacity * size
        if end > len(data):
            raise EventFileError(
                path,
                f"truncated: packet at byte {pos - _AEDAT3_HEADER.size} needs {capacity * size} "
                f"bytes of events, only {len(data) - pos} remain",
            )
        if kind == _AEDAT3_POLARITY:
            if size != _AEDAT3_POLARITY_SIZE:
                raise EventFileError(
                    path, f"polarity packet with eventSize {size}, expected {_AEDAT3_POLARITY_SIZE}"
                )
            raw = np.frombuffer(data, dtype="<u4", count=2 * number, offset=pos).reshape(-1, 2)
            words = raw[raw[:, 0] & 1 == 1]
            t = words[:, 1].astype(np.int64) + (np.int64(overflow) << 31)
            w = words[:, 0]
            chunks.append(make_events((w >> 17) & 0x1FFF, (w >> 2) & 0x1FFF, t, (w >> 1) & 1))
        pos = end
    if not chunks:
        raise EventFileError(path, "no polarity-event packets (eventType 1) in the file")
    return np.concatenate(chunks)


def read_gesture_labels(path: PathLike) -> np.ndarray:
    """A DVS128 Gesture label CSV as int64 ``[n, 3]``: class (1..11), start µs, end µs."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise EventFileError(path, "label file is empty")
    header = [cell.strip() for cell in rows[0]]
    expected = ["class", "startTime_usec", "endTime_usec"]
    if header != expected:
        raise EventFileError(path, f"expected the header {','.join(expected)}, found {rows[0]}")
    table = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            label, start, end = (int(float(cell)) for cell in row)
        except ValueError:
            raise EventFileError(path, f"line {line}: expected 3 integers, found {row}") from None
        if not 1 <= label <= 11 or end <= start:
            raise EventFileError(
                path, f"line {line}: need class in 1..11 and end > start, found {row}"
            )
        table.append((label, start, end))
    if not table:
        raise EventFileError(path, "label file has a header but no gestures")
    return np.asarray(table, dtype=np.int64)


def cut_by_labels(events: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Cut a recording into ``(events with start <= t < end, class - 1)``, one per label row."""
    t = events["t"]
    return [(events[(t >= start) & (t < end)], int(label) - 1) for label, start, end in labels]


def read_dvs_gesture(
    aedat_path: PathLike, labels_path: PathLike | None = None
) -> list[tuple[np.ndarray, int]]:
    """A DVS128 Gesture recording cut into one ``(events, label 0..10)`` per gesture.

    ``labels_path`` defaults to ``<stem>_labels.csv`` next to the ``.aedat`` file.
    """
    aedat_path = Path(aedat_path)
    if labels_path is None:
        labels_path = aedat_path.with_name(aedat_path.stem + "_labels.csv")
    labels = read_gesture_labels(labels_path)
    return cut_by_labels(read_aedat3(aedat_path), labels)


# ---------------------------------------------------------------------------------------------
# ATIS .bin, the DVS128 Gesture .npy re-encoding, AEDAT4


def read_atis_bin(path: PathLike) -> np.ndarray:
    """ATIS ``.bin`` (N-MNIST, N-Caltech101): 5 bytes per event.

    Byte 0 is x, byte 1 y, byte 2 bit 7 the polarity and bits 6..0 timestamp bits 22..16,
    bytes 3-4 timestamp bits 15..0 (big-endian). An event with ``y == 240`` marks a wrap of
    the 23-bit timestamp: it is dropped and later timestamps gain ``2**23`` µs. (Orchard's
    reference reader adds ``2**13`` instead; the two differ only on recordings longer than
    8.4 s, which the published datasets do not contain.)
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0:
        raise EventFileError(path, "file is empty")
    head = raw[:10].tobytes()
    if head.startswith((b"#!AER-DAT", b"\x93NUMPY")):
        raise EventFileError(
            path, f"wrong format: starts like an AEDAT/.npy file ({head!r}), not ATIS .bin events"
        )
    if raw.size % 5:
        raise EventFileError(
            path, f"truncated: {raw.size} bytes is not a whole number of 5-byte events"
        )
    rows = raw.reshape(-1, 5).astype(np.int64)
    t = ((rows[:, 2] & 0x7F) << 16) | (rows[:, 3] << 8) | rows[:, 4]
    marker = rows[:, 1] == _ATIS_OVERFLOW_Y
    t = t + (np.cumsum(marker) << _ATIS_TS_BITS)
    keep = ~marker
    return make_events(rows[keep, 0], rows[keep, 1], t[keep], rows[keep, 2] >> 7)


def read_gesture_npy(path: PathLike) -> np.ndarray:
    """DVS128 Gesture ``.npy`` re-encoding: ``[N, 4]`` columns x, y, p, t (ms) → t in µs."""
    path = Path(path)
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise EventFileError(path, f"not a readable .npy array (truncated?): {exc}") from exc
    if table.ndim != 2 or table.shape[1] != 4:
        raise EventFileError(
            path, f"expected an [N, 4] array (x, y, p, t in ms), found shape {table.shape}"
        )
    if table.shape[0] == 0:
        raise EventFileError(path, "no events (the array has 0 rows)")
    t_us = np.rint(table[:, 3].astype(np.float64) * 1000.0).astype(np.int64)
    return make_events(table[:, 0], table[:, 1], t_us, table[:, 2])


def read_aedat4(path: PathLike) -> np.ndarray:
    """AEDAT4 polarity events through the optional ``aedat`` package (``pip install aedat``)."""
    path = Path(path)
    try:
        aedat = importlib.import_module("aedat")
    except ImportError:
        raise ImportError(
            f"reading AEDAT4 file {path} needs the optional package 'aedat' (pip install aedat)"
        ) from None
    chunks = []
    try:
        for packet in aedat.Decoder(path):
            if "events" in packet:
                ev = packet["events"]
                on = ev["on"] if "on" in ev.dtype.names else ev["p"]
                chunks.append(make_events(ev["x"], ev["y"], ev["t"], np.asarray(on, np.int8)))
    except (RuntimeError, OSError, ValueError) as exc:
        raise EventFileError(path, f"cannot decode AEDAT4: {exc}") from exc
    if not chunks:
        raise EventFileError(path, "no polarity events in the AEDAT4 file")
    return np.concatenate(chunks)
