"""The README's usage example runs as written, and CI runs the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_blocks(language):
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_usage_example_runs(capsys):
    (example,) = code_blocks("python")
    exec(compile(example, "README.md", "exec"), {})
    assert "mot" in capsys.readouterr().out


def test_ci_runs_the_readme_test_command():
    commands = [block.strip() for block in code_blocks("bash")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()
