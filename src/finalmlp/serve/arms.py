"""A/B arms with their loaded bundles: what the service scores through, and what its metrics
label by. Below the app (``serve.app``) and its metrics (``serve.metrics``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from finalmlp.bundle import load_run
from finalmlp.errors import DataError
from finalmlp.serve.ab import Arm, normalize_arms
from finalmlp.serve.rowwise import RowScorer
from finalmlp.serve.scorer import Scorer, UnknownFields

VERSION_CHARS = 12  # model_version: this many hex digits of the bundle's content hash


@dataclass(frozen=True)
class ArmBundle:
    """An arm with its loaded bundle: the Scorer (a RowScorer from :func:`load_arm`) and the
    bundle's content hash."""

    arm: Arm
    scorer: Scorer
    content_sha256: str

    @property
    def name(self) -> str:
        return self.arm.name

    @property
    def version(self) -> str:
        return self.content_sha256[:VERSION_CHARS]

    @property
    def rowwise(self) -> bool:
        """Whether small requests are encoded row-wise (see :mod:`finalmlp.serve.rowwise`)."""
        return getattr(self.scorer, "encoder", None) is not None


def load_arm(arm: Arm, unknown_fields: UnknownFields = "reject") -> ArmBundle:
    """Load an arm's bundle (verified against its manifest's content hash).

    Raises:
        DataError: not a run directory, damaged, or replaced while it was being read.
    """
    for _ in range(3):  # a bundle replaced while loading: read it again
        before = _manifest_hash(arm.path)
        run = load_run(arm.path)
        if _manifest_hash(arm.path) == before:
            return ArmBundle(arm, RowScorer(run, unknown_fields), before)
    raise DataError(f"{arm.path} kept changing while it was loaded; try again")


def load_arms(arms: Sequence[Arm], unknown_fields: UnknownFields = "reject") -> list[ArmBundle]:
    """Load every arm, with weights normalised to sum to 1."""
    return [load_arm(arm, unknown_fields) for arm in normalize_arms(arms)]


def _manifest_hash(path: Path) -> str:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        return str(manifest["content_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # load_run names what is wrong
