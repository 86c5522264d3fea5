"""Post-hoc calibration: Platt and isotonic against known answers and scikit-learn, JSON state,
bad input, the bundle (hashed, format 2, old bundles still load), train and `finalmlp calibrate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from typer.testing import CliRunner

from finalmlp.bundle import content_hash, load_run, replace_calibration, save_run
from finalmlp.calibration import (
    IsotonicCalibrator,
    PlattCalibrator,
    calibration_effect,
    calibrator_from_dict,
    make_calibrator,
    pool_adjacent_violators,
    sigmoid,
)
from finalmlp.cli.main import USER_ERROR_EXIT, _print_summary, app
from finalmlp.config import parse_config
from finalmlp.errors import ConfigError, DataError, NotFittedError
from finalmlp.metrics import log_loss, roc_auc
from finalmlp.predict import run_splits
from finalmlp.train.run import train_from_config

METHODS = [PlattCalibrator, IsotonicCalibrator]


def miscalibrated(num_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from ``sigmoid(z)``, scores ``sigmoid(2.5 z + 1)``: overconfident, high."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, num_rows)
    labels = (rng.random(num_rows) < sigmoid(z)).astype(np.float64)
    return sigmoid(2.5 * z + 1.0), labels


# ----------------------------------------------------------------------------- Platt
def test_platt_recovers_known_slope_and_intercept() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 200_000)
    labels = (rng.random(z.size) < sigmoid(0.6 * z - 0.8)).astype(np.float64)
    platt = PlattCalibrator().fit(sigmoid(z), labels)
    assert platt.slope_ == pytest.approx(0.6, abs=0.02)
    assert platt.intercept_ == pytest.approx(-0.8, abs=0.02)
    again = PlattCalibrator().fit(sigmoid(z), labels)  # deterministic
    assert (again.slope_, again.intercept_) == (platt.slope_, platt.intercept_)
    p = rng.random(50)
    np.testing.assert_allclose(
        platt.transform(p), sigmoid(platt.slope_ * np.log(p / (1 - p)) + platt.intercept_)
    )


# ----------------------------------------------------------------------------- isotonic
def _tied_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.random(3000).round(2)  # ~100 distinct values: many ties
    return probs, (rng.random(probs.size) < probs**2).astype(np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_adjacent_violators_matches_sklearn_with_ties_and_weights(seed: int) -> None:
    probs, labels = _tied_data(seed)
    unique, inverse, counts = np.unique(probs, return_inverse=True, return_counts=True)
    rates = np.bincount(inverse, weights=labels) / counts
    values, sizes = pool_adjacent_violators(rates, counts.astype(np.float64))
    expected = IsotonicRegression().fit(probs, labels).predict(unique)
    np.testing.assert_allclose(np.repeat(values, sizes), expected, rtol=0, atol=1e-12)
    assert np.all(np.diff(values) > 0)  # equal neighbours pooled


@pytest.mark.parametrize("seed", [0, 1])
def test_isotonic_interpolates_sklearns_blocks_between_centres_with_clipping(seed: int) -> None:
    probs, labels = _tied_data(seed)
    unique, counts = np.unique(probs, return_counts=True)
    fitted = IsotonicRegression().fit(probs, labels).predict(unique)
    block = np.r_[0, np.cumsum(np.diff(fitted) > 1e-12)]  # sklearn's blocks: runs of one value
    centres = np.bincount(block, unique * counts) / np.bincount(block, counts)
    block_values = np.bincount(block, fitted * counts) / np.bincount(block, counts)
    iso = IsotonicCalibrator(eps=1e-3).fit(probs, labels)
    np.testing.assert_allclose(iso.centres_, centres, atol=1e-12)
    np.testing.assert_allclose(iso.values_, block_values, atol=1e-12)
    grid = np.r_[0.0, np.linspace(0, 1, 997), 1.0]
    expected = np.clip(np.interp(grid, centres, block_values), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(iso.transform(grid), expected, atol=1e-12)
    assert iso.transform(np.array([0.0]))[0] == 1e-3  # the lowest block has no clicks


def test_isotonic_logloss_stays_finite_when_a_block_is_all_clicks() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    iso = IsotonicCalibrator().fit(probs, np.array([0.0, 0.0, 0.0, 1.0, 1.0]))
    out = iso.transform(np.array([0.0, 0.95]))
    assert out[0] == iso.eps and out[1] == 1 - iso.eps
    assert np.isfinite(log_loss(np.array([1, 0]), out, eps=0.0))


# ----------------------------------------------------------------------------- both
@pytest.mark.parametrize("cls", METHODS)
def test_calibration_lowers_logloss_and_ece_and_keeps_the_ranking(cls: Any) -> None:
    (valid_probs, valid_labels), (test_probs, test_labels) = (
        miscalibrated(20_000, seed=1),
        miscalibrated(20_000, seed=2),
    )
    calibrator = cls().fit(valid_probs, valid_labels)
    splits = {"valid": (valid_labels, valid_probs), "test": (test_labels, test_probs)}
    effect = calibration_effect(calibrator, splits)
    assert effect["method"] == cls.method
    for split in ("valid", "test"):
        numbers = effect[split]
        assert numbers["logloss_after"] < numbers["logloss_before"] - 0.02
        assert numbers["ece_after"] < 0.02 < numbers["ece_before"]
        if cls is PlattCalibrator:  # monotone: the same order, the same AUC
            assert numbers["auc_after"] == pytest.approx(numbers["auc_before"], abs=1e-12)
        else:  # flat only beyond the outer block centres: nearly the same AUC
            assert abs(numbers["auc_after"] - numbers["auc_before"]) < 2e-3


@pytest.mark.parametrize("cls", METHODS)
def test_json_state_round_trips(cls: Any) -> None:
    calibrator = cls().fit(*miscalibrated(2000, seed=3))
    text = json.dumps(calibrator.to_dict())  # plain JSON, no pickle
    loaded = calibrator_from_dict(json.loads(text))
    assert type(loaded) is cls and loaded.to_dict() == calibrator.to_dict()
    probs = np.random.default_rng(4).random(500)
    np.testing.assert_array_equal(loaded.transform(probs), calibrator.transform(probs))


@pytest.mark.parametrize("cls", METHODS)
def test_use_before_fit_is_not_fitted_error(cls: Any) -> None:
    with pytest.raises(NotFittedError, match=f"this {cls.__name__} is not fitted yet"):
        cls().transform(np.array([0.5]))
    with pytest.raises(NotFittedError, match="call fit first"):
        cls().to_dict()


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        ([0.2, 0.4, 0.6], [1, 1, 1], "needs both clicks and non-clicks, got 3 clicks in 3 rows"),
        ([0.2, 0.4, 0.6], [0, 0, 0], "needs both clicks and non-clicks, got 0 clicks"),
        ([0.2, np.nan, 0.6], [0, 1, 0], r"must be finite, got NaN or inf \(row 1\)"),
        ([0.2, 0.4, 0.6], [0, np.nan, 1], "labels must be 0 or 1"),
        ([0.2, 0.4, 1.5], [0, 1, 1], r"must lie in \[0, 1\], got values from 0.2 to 1.5"),
        ([0.2, 0.4], [0, 1, 1], r"labels must have the probabilities' shape \(2,\)"),
    ],
)
def test_bad_fitting_data_is_a_data_error(
    cls: Any, probs: list, labels: list, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        cls().fit(np.array(probs), np.array(labels))


def test_bad_names_and_states_are_named() -> None:
    with pytest.raises(ConfigError, match=r"must be one of \['isotonic', 'platt'\], got 'beta'"):
        make_calibrator("beta")
    with pytest.raises(DataError, match=r"cal.json: calibration method must be one of .* 'x'"):
        calibrator_from_dict({"method": "x"}, "cal.json")
    with pytest.raises(DataError, match="not a valid platt calibration"):
        calibrator_from_dict({"method": "platt", "slope": 1.0})
    with pytest.raises(DataError, match="values must not decrease"):
        calibrator_from_dict({"method": "isotonic", "eps": 1e-6, "centres": [0.1, 0.2],
                              "values": [0.5, 0.4]})  # fmt: skip
    with pytest.raises(DataError, match="must be finite"):
        PlattCalibrator.from_dict({"slope": 1.0, "intercept": 0.0}).transform(np.array([np.nan]))


# ----------------------------------------------------------------------------- bundle
TINY: dict[str, Any] = {
    "data": {
        "recipe": "synthetic",
        "synthetic": {"num_rows": 3000, "num_categorical": 4, "num_numeric": 2,
                      "max_cardinality": 50, "seed": 3},
        "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
    },
    "model": {"name": "finalmlp", "embedding_dim": 4, "mlp1": {"hidden_units": [16]},
              "mlp2": {"hidden_units": [16]}, "fs_hidden_units": [8], "num_heads": 2},
    "train": {"batch_size": 256, "max_epochs": 1, "progress": False, "seed": 1},
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny run trained with ``train.calibration: isotonic``, and its metrics."""
    folder = tmp_path_factory.mktemp("calibrated")
    raw = {**TINY, "data": {**TINY["data"], "cache_dir": str(folder / "cache")}}
    config = parse_config({**raw, "train": {**TINY["train"], "calibration": "isotonic"}})
    metrics = train_from_config(config, folder / "run")
    return folder / "run", metrics


def test_training_fits_stores_and_reports_the_calibration(
    trained: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, metrics = trained
    saved = json.loads((run_dir / "metrics.json").read_text())["calibration"]
    assert saved["method"] == "isotonic" and set(saved) == {"method", "valid", "test"}
    assert set(saved["valid"]) == {
        "logloss_before", "logloss_after", "ece_before", "ece_after", "auc_before", "auc_after"
    }  # fmt: skip
    assert saved["valid"]["logloss_before"] == pytest.approx(metrics["valid"]["logloss"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert manifest["model_sha256"] != manifest["content_sha256"]
    run = load_run(run_dir)
    assert run.calibration is not None
    assert isinstance(run.calibration.calibrators[0], IsotonicCalibrator)
    _print_summary(metrics, run_dir)
    assert "isotonic calibration (fitted on valid)" in capsys.readouterr().out


def _copy_run(run_dir: Path, target: Path) -> Path:
    run = load_run(run_dir)
    save_run(target, run.config, run.processor, run.model, run.metrics, run.calibration)
    return target


@pytest.mark.parametrize("action", ["edit", "remove", "add"])
def test_calibration_is_covered_by_the_content_hash(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path, action: str
) -> None:
    run_dir = _copy_run(trained[0], tmp_path / "run")
    target = run_dir / "calibration.json"
    if action == "edit":
        state = json.loads(target.read_text())
        state["values"][-1] = 0.999
        target.write_text(json.dumps(state))
    elif action == "remove":
        target.unlink()
    else:  # an uncalibrated run given a calibration.json by hand
        run = load_run(run_dir)
        replace_calibration(run, None, run.metrics)
        target.write_text(json.dumps(PlattCalibrator.from_dict({"slope": 2, "intercept": 0})
                                     .to_dict()))  # fmt: skip
    with pytest.raises(DataError, match=r"calibration\.json do not match manifest\.json"):
        load_run(run_dir)


def test_a_bundle_from_before_calibration_still_loads(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run = load_run(trained[0])
    save_run(tmp_path / "old", run.config, run.processor, run.model, {"valid": {}})
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert manifest["format_version"] == 1  # no calibration: as readable as before
    assert manifest["model_sha256"] == manifest["content_sha256"]
    del manifest["model_sha256"]  # what format 1 wrote
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["train"]["calibration"]  # a config written before the option existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    manifest["content_sha256"] = content_hash(tmp_path / "old")
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    old = load_run(tmp_path / "old")
    assert old.calibration is None
    probs = np.array([0.1, 0.7])
    assert old.calibrate(probs) is probs


def test_replacing_the_calibration_of_a_run_changed_since_loading_is_refused(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run_dir = _copy_run(trained[0], tmp_path / "run")
    run = load_run(run_dir)
    _copy_run(trained[0], run_dir)  # re-saved meanwhile: same files...
    (run_dir / "processor.json").write_text("{}")  # ...then one edited
    with pytest.raises(DataError, match="changed since it was loaded; run the command again"):
        replace_calibration(run, None, {})
    assert (run_dir / "calibration.json").is_file()  # the run is left as it was


def test_run_splits_encode_with_the_runs_processor_when_the_cache_holds_another(
    trained: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = load_run(trained[0])
    cached = run_splits(run)
    monkeypatch.setattr(run.processor, "to_dict", lambda: {"another": "processor"})
    encoded = run_splits(run)  # from the raw data (the synthetic recipe), not the cache
    for name in ("valid", "test"):
        np.testing.assert_array_equal(
            encoded[name].features.categorical, cached[name].features.categorical
        )
        np.testing.assert_array_equal(encoded[name].label, cached[name].label)


# ----------------------------------------------------------------------------- CLI
def test_cli_calibrate_replaces_and_removes_the_calibration(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run_dir = _copy_run(trained[0], tmp_path / "run")
    result = CliRunner().invoke(app, ["calibrate", str(run_dir), "--method", "platt"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "platt calibration fitted on valid" in result.stdout
    assert "valid logloss" in result.stdout and "test  logloss" in result.stdout
    run = load_run(run_dir)
    assert run.calibration is not None
    assert isinstance(run.calibration.calibrators[0], PlattCalibrator)
    effect = run.metrics["calibration"]
    assert effect["method"] == "platt"
    assert effect["valid"]["logloss_after"] <= effect["valid"]["logloss_before"] + 1e-12
    assert effect["test"]["auc_after"] == pytest.approx(effect["test"]["auc_before"], abs=1e-12)
    assert effect["valid"]["auc_before"] == pytest.approx(run.metrics["valid"]["auc"])
    result = CliRunner().invoke(app, ["calibrate", str(run_dir), "--method", "none"])
    assert result.exit_code == 0 and "removed the calibration" in result.stdout
    run = load_run(run_dir)
    assert run.calibration is None and "calibration" not in run.metrics
    assert not (run_dir / "calibration.json").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["format_version"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["calibrate", "{missing}", "--method", "platt"], "is not a finalmlp run directory"),
        (["calibrate", "{run}", "--method", "beta"], "method must be platt, isotonic or none"),
    ],
)
def test_cli_calibrate_errors(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path, args: list[str], message: str
) -> None:
    paths = {"missing": str(tmp_path / "nowhere"), "run": str(trained[0])}
    result = CliRunner().invoke(app, [a.format(**paths) for a in args])
    assert result.exit_code == USER_ERROR_EXIT
    assert message in result.stderr and "Traceback" not in result.output


def test_platt_keeps_auc_exactly_on_ties() -> None:
    probs = np.repeat([0.1, 0.4, 0.4, 0.9], 50)
    labels = np.tile([0, 1], 100).astype(np.float64)
    labels[:10] = 0
    platt = PlattCalibrator().fit(probs, labels)
    assert roc_auc(labels, platt.transform(probs)) == roc_auc(labels, probs)
