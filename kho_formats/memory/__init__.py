"""Physical-memory images (``image``, ``kdump``, ``kcore``) and page sets (``pageset``, ``bits``, ``alloc``,
``chain``).  Imports only the base modules and :mod:`kho_formats.abi`."""

# the built-in image formats: each registers itself with image.register_format
from . import kdump  # noqa: F401
