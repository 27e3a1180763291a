"""The package version (one place: ``kho --version``, ``generator`` keys, ``kho_formats.__version__``)."""

__version__ = "0.1.0"
