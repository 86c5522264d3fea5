"""Feature processing: vocabularies, OOV, hashing, numeric transforms (Polars, no torch)."""
