"""docs/interop.md's tutorial runs as written: its python blocks, in order, in a fresh folder."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "interop.md"


def test_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "tutorial"}
    exec(compile("\n".join(blocks), str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "live: accuracy" in printed and "NIR: accuracy" in printed
    assert "steps saved per image" in printed
    assert (tmp_path / "mnist-snntorch.nir").is_file()
