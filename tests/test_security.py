"""Security rules of the project, checked over everything we ship: code, pages and benchmarks."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [*ROOT.glob("src/**/*.py"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("benchmarks/**/*.py"), ROOT / "noxfile.py"]


def test_nothing_enables_remote_code() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SHIPPED
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"trust_remote_code\s*=\s*True", line)
    ]
    assert offenders == []


def code_lines(path: Path) -> list[tuple[int, str]]:
    """Numbered lines of code, with the strings and comments of Python files blanked (messages may advise)."""
    text = path.read_text()
    if path.suffix != ".py":
        return list(enumerate(text.splitlines(), start=1))
    lines = text.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT):
            (row, col), (end_row, end_col) = token.start, token.end
            for index in range(row - 1, end_row):
                start = col if index == row - 1 else 0
                stop = end_col if index == end_row - 1 else len(lines[index])
                lines[index] = lines[index][:start] + " " * (stop - start) + lines[index][stop:]
    return list(enumerate(lines, start=1))


def test_nothing_loads_pickles() -> None:
    """Weights are safetensors only: no torch.load, and no opting out of safetensors."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SHIPPED
        for number, line in code_lines(path)
        if re.search(r"\btorch\.load\(|use_safetensors\s*=\s*False|weights_only\s*=\s*False", line)
    ]
    assert offenders == []


def test_shipped_files_were_found() -> None:
    assert len(SHIPPED) > 10 and (ROOT / "docs" / "chat.md") in SHIPPED
