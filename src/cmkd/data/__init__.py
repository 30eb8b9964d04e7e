"""Data: arrays + presence + split, npz and sharded loading, missingness patterns, synthetic helpers."""
