"""The README's commands: its first bash block is exactly ``make demo`` and ``make test``, and
every ``.venv/bin/xdfx`` line it quotes runs (exit code 0) from the repository root.

The lines run in the order the README gives them (``relax --save`` writes the checkpoint the
later lines read), through ``python -m xdfx`` so the test does not depend on where the venv is;
the paths given to ``--out``, ``--save`` and ``--checkpoint`` are moved under ``tmp_path``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLI = ".venv/bin/xdfx"
PATH_OPTIONS = ("--out", "--save", "--checkpoint")


def bash_blocks(text: str) -> list[list[str]]:
    """The lines of every ```bash block, comments and continuations joined."""
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        joined = re.sub(r"\\\n\s*", " ", body)
        blocks.append([line.strip() for line in joined.splitlines() if line.strip()])
    return blocks


def command(line: str) -> str:
    """A line without its trailing ``# comment``."""
    return " ".join(shlex.split(line, comments=True))


def cli_lines() -> list[str]:
    return [command(line) for block in bash_blocks(README.read_text()) for line in block if line.startswith(CLI + " ")]


def test_first_block_is_the_two_make_commands() -> None:
    first = bash_blocks(README.read_text())[0]
    assert [command(line) for line in first] == ["make demo", "make test"]


def test_readme_quotes_every_cli_command() -> None:
    quoted = {line.split()[1] for line in cli_lines()}
    assert quoted == {"relax", "harden", "export", "report"}


def test_cli_lines_run_as_written(tmp_path: Path) -> None:
    lines = cli_lines()
    assert lines, "the README quotes no .venv/bin/xdfx line"
    for line in lines:
        argv = shlex.split(line)[1:]
        for i, arg in enumerate(argv[:-1]):
            if arg in PATH_OPTIONS:
                argv[i + 1] = str(tmp_path / Path(argv[i + 1]).name)
        proc = subprocess.run([sys.executable, "-m", "xdfx", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
