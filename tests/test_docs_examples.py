"""Every ```python example in README.md and docs/ runs, page by page.

The blocks of one page run in order in one namespace (a later block may use what an earlier one
made), in a fresh temporary folder, with the frame cache there too. A block whose first line is
``# not run: REASON`` is shown to readers but not run: it is reported as skipped with that
reason, e.g. an example that needs a dataset that is not on this machine. Other fences
(```bash, ```yaml, ...) are not run. A DeprecationWarning raised from spikecut is an error
here, so an example still written with an old name (``steps=``, ``repeat=``, ...) fails.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP = "# not run:"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced block tagged ``python``, in page order."""
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group("info").strip().split(" ")[0] not in ("python", "py"):
            continue
        indent = len(match.group("indent"))
        body = "".join(line[indent:] for line in match.group("body").splitlines(keepends=True))
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, body))
    return blocks


# The message of every spikecut deprecation (spikecut._deprecation.warn_deprecated). A warning
# is attributed to the caller's line (here the example), so it is matched by its text, not by
# the module that raised it.
_SPIKECUT_DEPRECATION = r".* is deprecated and will be removed in the next release; use "


@contextmanager
def old_names_are_errors() -> Iterator[None]:
    """A DeprecationWarning from spikecut (an old public name) raises inside this block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", _SPIKECUT_DEPRECATION, DeprecationWarning)
        yield


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


RUNNABLE = [
    p for p in PAGES if any(not b.startswith(SKIP) for _, b in python_blocks(p.read_text()))
]
SKIPPED = [
    (p, line, body.splitlines()[0][len(SKIP) :].strip())
    for p in PAGES
    for line, body in python_blocks(p.read_text())
    if body.startswith(SKIP)
]


def test_the_collector_finds_the_examples() -> None:
    text = "x\n```python\na = 1\n```\n\n  ```python\n  b = a + 1\n  ```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (7, "b = a + 1\n")]
    assert len(RUNNABLE) >= 5


def test_an_old_name_in_an_example_is_an_error() -> None:
    old = "from spikecut.layers import TEBN\nTEBN(2, steps=3)\n"
    with old_names_are_errors(), pytest.raises(DeprecationWarning, match="steps"):
        exec(compile(old, "example", "exec"), {})
    # other libraries' deprecations stay warnings
    with pytest.warns(DeprecationWarning, match="something else"), old_names_are_errors():
        warnings.warn("something else is deprecated", DeprecationWarning, stacklevel=1)


@pytest.mark.parametrize("page", RUNNABLE, ids=_page_id)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPIKECUT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_example_{page.stem}"}
    for line, code in python_blocks(page.read_text()):
        if code.startswith(SKIP):
            continue
        where = f"{_page_id(page)}:{line}"
        try:
            with old_names_are_errors():
                exec(compile(code, where, "exec"), namespace)
        except Exception as err:  # name the block that failed
            raise AssertionError(f"the example at {where} failed: {err!r}") from err


@pytest.mark.parametrize(
    ("page", "line", "reason"), SKIPPED, ids=[f"{_page_id(p)}:{n}" for p, n, _ in SKIPPED]
)
def test_examples_not_run(page: Path, line: int, reason: str) -> None:
    assert reason, f"{_page_id(page)}:{line}: say why the example is not run"
    pytest.skip(f"{_page_id(page)}:{line} not run: {reason}")
