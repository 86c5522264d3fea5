"""`finalmlp report` and the report `train` writes, on tiny synthetic runs; Chromium renders it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_report_html import embedded_pngs
from typer.testing import CliRunner

from finalmlp.bundle import load_run
from finalmlp.cli.main import USER_ERROR_EXIT, app
from finalmlp.data.synthetic import generate_synthetic
from finalmlp.features.processor import FeatureProcessor
from finalmlp.report import build
from finalmlp.report.browser import check_report, find_chromium
from finalmlp.schema import SyntheticOptions, TrainConfig

TINY_FINALMLP = {
    "name": "finalmlp",
    "embedding_dim": 4,
    "mlp1": {"hidden_units": [16]},
    "mlp2": {"hidden_units": [16]},
    "fs_hidden_units": [16],
    "fs1_context": ["c0"],
    "num_heads": 2,
}
# history, ROC, precision-recall, reliability, score histograms, gates, importance
FINALMLP_IMAGES = 7
_LAST_STDERR: list[str] = []  # stderr lines of the latest _train


def _train(
    folder: Path, model: dict, epochs: int, *flags: str, train: dict | None = None
) -> tuple[Path, str]:
    """Train through the CLI on 2,000 synthetic rows; returns the run directory and stdout."""
    raw = {
        "data": {
            "recipe": "synthetic",
            "synthetic": {"num_rows": 2000, "num_categorical": 4, "num_numeric": 2},
            "cache_dir": str(folder / "cache"),
        },
        "model": model,
        "train": {"max_epochs": epochs, "batch_size": 256, "seed": 1, **(train or {})},
    }
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "exp.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    run = folder / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(run), *flags])
    assert result.exit_code == 0, (result.output, result.exception)
    _LAST_STDERR[:] = result.stderr.splitlines()
    return run, result.stdout


@pytest.fixture(scope="module")
def finalmlp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    # uncalibrated (calibration is on by default): the tests below add one by hand
    folder = tmp_path_factory.mktemp("finalmlp")
    return _train(folder, TINY_FINALMLP, 2, "--no-progress", train={"calibration": "none"})


def test_train_writes_the_report_outside_the_hashed_bundle(finalmlp_run: tuple[Path, str]) -> None:
    run, stdout = finalmlp_run
    report = run / "report.html"
    assert f"report: {report}" in stdout
    page = report.read_text(encoding="utf-8")
    assert len(embedded_pngs(page)) == FINALMLP_IMAGES
    for title in ("Summary", "Training history", "Test split", "Feature gates"):
        assert f"<h2>{title}</h2>" in page
    assert "<h2>Permutation importance</h2>" in page and "expected calibration error" in page
    assert load_run(run).metrics["epochs"] == 2  # the extra file leaves the hash check intact


def test_report_command_writes_where_asked(finalmlp_run: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = finalmlp_run
    target = tmp_path / "elsewhere.html"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(target)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.strip() == f"wrote {target}"
    assert len(embedded_pngs(target.read_text(encoding="utf-8"))) == FINALMLP_IMAGES


def test_run_without_history_and_with_calibration(
    finalmlp_run: tuple[Path, str], tmp_path: Path
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finalmlp_run[0], run)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["history"]  # metrics.json is not hashed: an older or hand-made run
    metrics["calibration"] = {"method": "platt", "test": {"ece_before": 0.1, "ece_after": 0.02}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, (result.output, result.exception)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "Training history" not in page
    assert len(embedded_pngs(page)) == FINALMLP_IMAGES - 1
    assert "calibration: method platt<" in page  # metrics only: the scores are the model's
    assert "<td>test</td><td>0.0200</td><td>0.1000</td>" in page  # ECE after, before


def test_model_without_gates_gets_no_gate_section(tmp_path: Path) -> None:
    calibrated = "calibration" in TrainConfig.model_fields  # bundles may carry a calibrator
    train = {"calibration": "platt"} if calibrated else {}
    run, _ = _train(tmp_path, {"name": "lr"}, 1, train=train)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "Feature gates" not in page
    assert len(embedded_pngs(page)) == FINALMLP_IMAGES - 1  # one epoch: history still drawn
    if calibrated:
        assert "calibration: method platt; the test curves use the calibrated" in page


def test_no_report_flag_and_a_failing_report_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, stdout = _train(tmp_path / "a", {"name": "lr"}, 1, "--no-report")
    assert not (run / "report.html").exists() and "report:" not in stdout

    def broken(run_dir: Path, out: Path | None = None) -> Path:
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr("finalmlp.report.write_report", broken)
    run, stdout = _train(tmp_path / "b", {"name": "lr"}, 1)
    assert "run saved to" in stdout and not (run / "report.html").exists()
    assert _LAST_STDERR[-1].startswith("warning: no report written (plotting exploded)")
    load_run(run)


def test_splits_use_the_runs_processor_when_the_cache_holds_another(
    finalmlp_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = load_run(finalmlp_run[0])
    expected = build.load_splits(run)  # from the cache training filled
    options = SyntheticOptions(num_rows=300, num_categorical=4, num_numeric=2, seed=99)
    other = FeatureProcessor(run.config.data.features).fit(generate_synthetic(options))
    prepare, load_frames = build.prepare_data, build.load_frames
    raw_reads: list[object] = []
    monkeypatch.setattr(
        build, "prepare_data", lambda config: replace(prepare(config), processor=other)
    )
    monkeypatch.setattr(
        build, "load_frames", lambda config: raw_reads.append(config) or load_frames(config)
    )
    splits = build.load_splits(run)
    assert len(raw_reads) == 1  # re-encoded from the raw data, with the run's processor
    for name in ("valid", "test"):
        got, want = splits[name].features, expected[name].features
        np.testing.assert_array_equal(got.categorical, want.categorical)
        np.testing.assert_array_equal(got.numeric, want.numeric)


@pytest.mark.parametrize("case", ["missing", "not-a-run"])
def test_report_user_errors_are_one_line(tmp_path: Path, case: str) -> None:
    target = tmp_path / case
    if case == "not-a-run":
        target.mkdir()
    result = CliRunner().invoke(app, ["report", str(target)])
    assert result.exit_code == USER_ERROR_EXIT
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    expected = "not found" if case == "missing" else "is not a finalmlp run directory"
    assert expected in lines[0] and str(target) in lines[0]


def browser_or_skip() -> str:
    """Chromium's path when it and Playwright are there; else skip, or fail under ``CI=true``.

    CI must execute the browser test (``.ci/run`` installs Debian's chromium), so a missing
    browser there is a failure, not a silent skip.
    """
    executable = find_chromium()
    problem = None
    if executable is None:
        problem = (
            "no Chromium binary (chromium, chromium-browser, google-chrome or "
            "$FINALMLP_CHROMIUM): cannot check the report renders; install it with "
            "`apt-get install chromium`"
        )
    elif importlib.util.find_spec("playwright") is None:
        problem = "playwright (dev extra) is not installed: `pip install -r requirements.lock`"
    if problem is None:
        assert executable is not None
        return executable
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_browser_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "find_chromium", lambda: None)
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="no Chromium binary"):
        browser_or_skip()


def test_report_renders_in_headless_chromium(
    finalmlp_run: tuple[Path, str], tmp_path: Path
) -> None:
    executable = browser_or_skip()
    shot = tmp_path / "report.png"
    check = check_report(finalmlp_run[0] / "report.html", shot, executable)
    assert check.images == FINALMLP_IMAGES and check.broken == [] and check.ok
    assert shot.stat().st_size > 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
