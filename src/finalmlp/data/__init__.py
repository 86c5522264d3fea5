"""Data: readers, recipes, the synthetic generator, encoded-data cache and batch loader."""
