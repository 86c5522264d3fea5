"""Open a run's report.html in headless Chromium, check every image loaded, save a screenshot.

Writes RUN_DIR/report.html first when it is missing (or with --rebuild). Exit status 0 when
every image loaded, 1 otherwise, 2 when no Chromium is found.

Usage:
    .venv/bin/python benchmarks/screenshot_report.py runs/frappe --out report.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from finalmlp.report import REPORT_FILE, write_report
from finalmlp.report.browser import CHROMIUM_ENV, check_report, find_chromium


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory written by `finalmlp train`")
    parser.add_argument("--out", type=Path, default=Path("report.png"), help="screenshot PNG")
    parser.add_argument("--rebuild", action="store_true", help="write report.html again first")
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        print(f"no Chromium found: install chromium or set {CHROMIUM_ENV}", file=sys.stderr)
        return 2
    report = args.run_dir / REPORT_FILE
    if args.rebuild or not report.is_file():
        start = time.perf_counter()
        write_report(args.run_dir)
        print(f"wrote {report} in {time.perf_counter() - start:.1f} s")
    check = check_report(report, args.out, executable)
    size = args.out.stat().st_size
    print(f"images loaded: {check.loaded}/{check.images} ({executable})")
    if check.broken:
        print(f"broken images: {check.broken}")
    print(f"screenshot: {args.out} ({size:,} bytes)")
    return 0 if check.ok and size > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
