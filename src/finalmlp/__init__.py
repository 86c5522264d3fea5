"""finalmlp: FinalMLP click-through-rate prediction from raw logs to a served model."""

__version__ = "0.1.0"
