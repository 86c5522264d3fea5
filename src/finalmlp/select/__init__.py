"""OptFS feature-set selection (``finalmlp select``): see :mod:`finalmlp.select.run`."""

from finalmlp.select.run import SELECTED_CONFIG, SELECTION_FILE, select_from_config

__all__ = ["SELECTED_CONFIG", "SELECTION_FILE", "select_from_config"]
