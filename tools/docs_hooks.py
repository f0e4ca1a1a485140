"""MkDocs hook: publish the measured plots under ``reports/`` with the documentation.

The plots stay where the experiments put them (``reports/<experiment>/*.png``); this hook adds
them to the site at the same relative path, so a page in ``docs/`` links to
``reports/default/tradeoff-alpha_0.png`` (from the top level) without a copy in ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File


def on_files(files, config):
    root = Path(config["config_file_path"]).parent
    for path in sorted((root / "reports").rglob("*.png")):
        files.append(
            File(
                path.relative_to(root).as_posix(),
                src_dir=str(root),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
