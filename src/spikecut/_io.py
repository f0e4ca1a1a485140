"""Atomic file writes: a result file is either whole or absent, never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the finished file onto ``path`` in one rename.

    The temporary file lives in the destination folder so the rename never crosses
    file systems; if ``write`` raises, the temporary file is removed and ``path`` keeps
    whatever it held before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise ``obj`` as indented JSON and write it to ``path`` atomically.

    Serialisation happens before the file is opened, so an object that cannot be
    encoded raises without touching the disk.
    """
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def slug(name: str) -> str:
    """``name`` made safe as a file name: characters other than letters, digits, ``-_.``
    become ``_`` (a run named ``rcs alpha=0.002`` is stored as ``rcs_alpha_0.002``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
