"""Model-zoo benchmark: every model x seed on one dataset, tables and plot (``finalmlp bench``)."""
