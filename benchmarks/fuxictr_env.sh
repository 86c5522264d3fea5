#!/usr/bin/env bash
# Make benchmarks/.fuxictr-venv: FuxiCTR 2.3.10 for benchmarks/bench_vs_fuxictr.py, with its
# own Python 3.11 and the exact versions of benchmarks/fuxictr-requirements.txt (polars < 2,
# the CPU torch 2.13.0 of the local wheel store, Ray Data). The driver runs this when the venv
# is missing; rerun it by hand after editing the requirements (it is idempotent).
#
#   bash benchmarks/fuxictr_env.sh            # PY=/path/to/python3.11 to pick the interpreter
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${FUXICTR_VENV:-$here/.fuxictr-venv}"
py="${PY:-python3.11}"
requirements="$here/fuxictr-requirements.txt"
stamp="$venv/.installed"

command -v "$py" >/dev/null || { echo "error: $py not found; run PY=/path/to/python3.11 $0" >&2; exit 1; }
if [[ -f "$stamp" && "$stamp" -nt "$requirements" ]]; then
    echo "$venv is up to date"
    exit 0
fi
test -x "$venv/bin/python" || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" - <<'PY'
import fuxictr, polars, torch
from fuxictr.preprocess import FeatureProcessor, build_dataset  # noqa: F401 (imports Ray Data)
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block  # noqa: F401
from fuxictr.pytorch.models import BaseModel  # noqa: F401
assert fuxictr.__version__ == "2.3.10", fuxictr.__version__
assert int(polars.__version__.split(".")[0]) < 2, polars.__version__
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build; use the CPU wheel"
print(f"fuxictr {fuxictr.__version__}, polars {polars.__version__}, torch {torch.__version__}")
PY
touch "$stamp"
