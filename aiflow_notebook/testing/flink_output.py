"""Reading what a Flink file sink wrote: the lines of its finished part files."""

from __future__ import annotations

from pathlib import Path


def read_part_files(directory: str | Path) -> list[str]:
    """Every line of the finished part files under ``directory``, sorted (part order is not defined).

    Flink's FileSink writes ``part-<uid>-<n>`` files, possibly in bucket subdirectories, and keeps files
    in progress hidden (``.part-…inprogress…``) until a checkpoint or the end of input commits them; hidden
    files and directories are skipped, so only committed output is read. A missing directory reads as no
    lines (the sink creates it with its first part).
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    return sorted(line for part in root.rglob("*") if part.is_file()
                  and not any(name.startswith(".") for name in part.relative_to(root).parts)
                  for line in part.read_text().splitlines())
