"""The wheel as a user gets it: built from a clean copy, installed into a fresh venv, run
from outside the source tree. A file the wheel leaves out, or a pin in its metadata, fails.

The fresh venv gets the locked dependencies cheaply: it sees this environment's
site-packages (installed from ``requirements.lock``) through a ``.pth`` file, which adds the
folder but runs none of the ``.pth`` files in it, so this checkout's editable install stays
invisible. Nothing is downloaded (``--no-index``); the whole module takes about 10 s.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from finalmlp.bundle import load_run

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "finalmlp"
# What the build reads besides src/ (those that exist).
BUILD_INPUTS = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE")
RUN_FILES = (
    "config.json",
    "processor.json",
    "model.safetensors",
    "metrics.json",
    "manifest.json",
    "report.html",
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv_python: Path
    console_script: Path


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH, so only installed code can be imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


def _build_wheel(folder: Path) -> Path:
    """Build from a copy, so stale build/ or egg-info folders in the checkout cannot leak in."""
    source = folder / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    dist = folder / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source],
        folder,
    )
    wheels = list(dist.glob("finalmlp-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    folder = tmp_path_factory.mktemp("packaging")
    wheel = _build_wheel(folder)
    venv = folder / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], folder)
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        folder,
    )
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], folder)
    ours = sysconfig.get_paths()
    locked = dict.fromkeys([ours["purelib"], ours["platlib"]])  # ordered, deduplicated
    (Path(site.stdout.strip()) / "_locked_deps.pth").write_text("\n".join(locked) + "\n")
    return Installed(wheel, python, venv / "bin" / "finalmlp")


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))


def _locked_versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_wheel_holds_every_file_of_the_package(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        shipped = set(archive.namelist())
    source = {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert "finalmlp/py.typed" in source and "finalmlp/cli/main.py" in source
    assert sorted(source - shipped) == []


def test_metadata_states_floors_that_the_lock_satisfies(installed: Installed) -> None:
    metadata = _wheel_metadata(installed.wheel)
    assert metadata["Requires-Python"] == ">=3.11"
    pins = _locked_versions()
    checked = []
    for text in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"extra": "dev"}):
            continue  # optional extras beyond dev (mlflow) are not in the lock
        assert all(spec.operator == ">=" for spec in requirement.specifier), text
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a dependency but requirements.lock does not pin it"
        assert requirement.specifier.contains(pins[name]), (text, pins[name])
        checked.append(name)
    assert "torch" in checked and "pytest" in checked


def test_installed_wheel_trains_the_demo_outside_the_source_tree(
    installed: Installed, tmp_path: Path
) -> None:
    where = _run(
        [installed.venv_python, "-c", "import finalmlp; print(finalmlp.__file__)"], tmp_path
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.venv_python.parents[1])
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    config["data"]["synthetic"]["num_rows"] = 5000  # the demo's model and settings, less data
    config["train"]["max_epochs"] = 1
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [str(installed.console_script), "train", "demo.yaml", "--out", "run", "--no-progress"],
        cwd=tmp_path,
        env={**_clean_env(), "FINALMLP_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    run = tmp_path / "run"
    assert sorted(name for name in RUN_FILES if not (run / name).is_file()) == []
    loaded = load_run(run)  # the content hash written by the installed package checks out here
    assert loaded.metrics["epochs"] == 1
    assert 0.0 < loaded.metrics["test"]["auc"] < 1.0
