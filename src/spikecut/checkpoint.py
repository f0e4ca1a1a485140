"""Training checkpoints that are written atomically, verified, and loaded without running code.

A checkpoint file is a small header and a ``torch.save`` payload::

    SPIKECUT-CHECKPOINT\\n
    {"version": 1, "bytes": <payload length>, "sha256": "<hex digest of the payload>"}\\n
    <payload>

The payload holds only tensors, numbers, strings, lists and dicts, and is read back with
``torch.load(weights_only=True)``, which refuses anything that would execute code. The length
and the SHA-256 digest make a truncated or modified file a :class:`CheckpointError` that says
what is wrong, instead of weights that load silently wrong. Files are replaced in one rename
(:func:`spikecut._io.atomic_write`), so a crash mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "MAGIC", "VERSION"]

MAGIC = b"SPIKECUT-CHECKPOINT\n"
VERSION = 1
_MAX_HEADER = 4096


class CheckpointError(ValueError):
    """A checkpoint file that is not a whole, unmodified spikecut checkpoint."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically with its length and digest in the header."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = {"version": VERSION, "bytes": len(payload), "sha256": _digest(payload)}
    blob = MAGIC + json.dumps(header).encode("ascii") + b"\n" + payload

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, checking it first.

    Raises :class:`CheckpointError` naming the file when the magic line, the header, the
    length or the digest do not match, or when the payload holds anything but plain data.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    if not data.startswith(MAGIC):
        raise CheckpointError(
            f"{path}: not a spikecut checkpoint (expected the first line "
            f"{MAGIC.decode().strip()!r}, found {data[: len(MAGIC)]!r})"
        )
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CheckpointError(f"{path}: the header line is missing or cut off (truncated file?)")
    try:
        header = json.loads(data[len(MAGIC) : end])
        expected_bytes, expected_digest = int(header["bytes"]), str(header["sha256"])
        version = int(header["version"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable header ({err})") from None
    if version != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}, expected {VERSION}")
    payload = data[end + 1 :]
    if len(payload) != expected_bytes:
        raise CheckpointError(
            f"{path}: truncated or padded: the header promises {expected_bytes} bytes of "
            f"payload, the file holds {len(payload)}"
        )
    if _digest(payload) != expected_digest:
        raise CheckpointError(
            f"{path}: the payload's SHA-256 does not match the header: the file was modified "
            "or damaged after it was written; refusing to load it"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unpickling failure is a bad checkpoint)
        raise CheckpointError(f"{path}: cannot load the payload as plain data: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a mapping, found {type(state).__name__}")
    return state


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
