"""The package version (one place; ``kho_formats.__version__`` re-exports it)."""

__version__ = "0.1.0"
