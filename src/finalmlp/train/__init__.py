"""Training: the trainer, metrics, progress display and the config-driven run.

The package is also the API's ``finalmlp.train(config, out=...)``: calling it trains a run (see
:func:`finalmlp.api.train`). A package cannot be shadowed by a function of the same name (the
import system sets ``finalmlp.train`` to this module whenever a submodule is imported), so the
module itself is made callable.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from finalmlp.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
