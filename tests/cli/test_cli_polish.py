"""Small things a user sees: help that reads as whole sentences, warnings without a misleading
source line, run files with one file mode, and a README that says what stays in a run."""

from __future__ import annotations

import stat
import warnings
from pathlib import Path
from typing import Any

import typer
import yaml
from typer.testing import CliRunner

from finalmlp.cli.main import app
from finalmlp.config import parse_config
from finalmlp.data.badrows import BadRowsWarning
from finalmlp.data.dataset import load_frames

README = Path(__file__).resolve().parents[2] / "README.md"
# 20 rows, one with an extra field: dropped with a warning under on_bad_rows: skip
ROWS = "label,user\n" + "".join(f"{i % 2},u{i % 5}\n" for i in range(20)) + "1,u1,extra\n"


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """The leaf commands of a (Typer's own click) group, by their full name."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a sub-group such as `schema`
            found.update(_commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def test_every_command_help_is_whole_sentences() -> None:
    # Typer keeps the line breaks of a docstring's later paragraphs: one wrapped for the source
    # showed as sentences broken mid-line. Prose paragraphs must be single lines (indented
    # blocks, such as tune's YAML example, keep theirs).
    commands = _commands(typer.main.get_group(app))
    assert {"train", "predict", "tune", "bench", "schema infer", "data fetch"} <= set(commands)
    for name, command in commands.items():
        assert command.help, f"{name} has no help"
        for paragraph in command.help.split("\n\n"):
            if not any(line.startswith(" ") for line in paragraph.splitlines()):
                assert "\n" not in paragraph, f"`finalmlp {name} --help`: {paragraph!r}"


def test_tune_help_renders_a_paragraph_as_one_line_on_a_wide_terminal() -> None:
    result = CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "finished trials are kept, an interrupted one runs again, and only" in result.output


def _config(tmp_path: Path) -> Path:
    (tmp_path / "train.csv").write_text(ROWS, encoding="utf-8")
    raw = {
        "data": {
            "train": "train.csv",
            "on_bad_rows": "skip",
            "cache_dir": str(tmp_path / "cache"),
            "split": {"valid_fraction": 0.2, "test_fraction": 0.2},
            "features": [{"name": "user", "type": "categorical"}],
        },
        "model": {"name": "lr"},
        "train": {"max_epochs": 1, "progress": False},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_bad_rows_warning_names_the_callers_line(tmp_path: Path) -> None:
    # The files are read in threads: the warning pointed at concurrent/futures/thread.py:58.
    config = parse_config(yaml.safe_load(_config(tmp_path).read_text()), tmp_path).data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_frames(config)
    [warning] = [w for w in caught if issubclass(w.category, BadRowsWarning)]
    assert warning.filename == __file__
    assert "skipped 1 bad row" in str(warning.message)


def test_train_command_prints_warnings_as_plain_lines_and_saves_a_tidy_run(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    args = ["train", str(_config(tmp_path)), "--out", str(run), "--no-report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning: skipped 1 bad row in " in result.stderr
    assert "thread.py" not in result.stderr and "BadRowsWarning" not in result.stderr
    # safetensors' save_file wrote model.safetensors 0600, the other files 0644
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"], modes
    # The README says so: a finished run keeps no checkpoints/ folder.
    assert not (run / "checkpoints").exists()
    assert "`checkpoints/` is removed" in README.read_text(encoding="utf-8")
