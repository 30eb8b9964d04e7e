"""The package version (one place; ``cmkd.__version__`` and the edge model's sidecar read it)."""

__version__ = "0.1.0"
