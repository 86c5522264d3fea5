"""Run reports: ``report.html`` with training history, test curves, calibration, FinalMLP's
feature gates and permutation importance (``finalmlp report RUN_DIR``).

``write_report`` is imported on first use: :mod:`finalmlp.report.curves` alone (NumPy) is used
by calibration at training time, which needs neither matplotlib nor the bundle loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finalmlp.report.build import REPORT_FILE, write_report

__all__ = ["REPORT_FILE", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from finalmlp.report import build

        return getattr(build, name)
    raise AttributeError(f"module 'finalmlp.report' has no attribute {name!r}")
