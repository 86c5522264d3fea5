"""Hyperparameter search with Optuna: ``finalmlp tune TUNE.yaml --trials N --out DIR``.

TPE sampling, median pruning on the validation metric after each epoch, SQLite storage so a
stopped search resumes, the base config as trial 0 (the default to beat), ``best.yaml`` ready
to train, and a report. See docs/tuning.md.
"""

from finalmlp.tune.runner import TuneResult, run_tune
from finalmlp.tune.spec import TuneSpec, load_tune_spec

__all__ = ["TuneResult", "TuneSpec", "load_tune_spec", "run_tune"]
