"""The kernel ABI: versions (``versions.py``, from ``schemas/kho-vN.toml``) and struct layouts (``layout.py``).

This package re-exports the public API of :mod:`kho_formats.abi.versions`, so
``from kho_formats import abi; abi.get_version("kho-v4")`` works.  Note that
``abi.versions`` is therefore the *function* listing the versions; import the
module itself with ``from kho_formats.abi.versions import ...``.
"""

from .versions import (
    BYTE_ORDERS,
    PAGE_SIZES,
    PROPERTY_TYPES,
    AbiVersion,
    RadixGeometry,
    SubnodeProperty,
    by_compatible,
    check_chunk_list_schema,
    check_radix_schema,
    eval_formula,
    extra_schemas,
    get_version,
    load_schema_file,
    map_kinds,
    on_registry_change,
    page_shift,
    register,
    register_map_kind,
    unregister,
    unregister_map_kind,
    version_names,
    versions,
)

__all__ = [
    "BYTE_ORDERS",
    "PAGE_SIZES",
    "PROPERTY_TYPES",
    "AbiVersion",
    "RadixGeometry",
    "SubnodeProperty",
    "by_compatible",
    "check_chunk_list_schema",
    "check_radix_schema",
    "eval_formula",
    "extra_schemas",
    "get_version",
    "load_schema_file",
    "map_kinds",
    "on_registry_change",
    "page_shift",
    "register",
    "register_map_kind",
    "unregister",
    "unregister_map_kind",
    "version_names",
    "versions",
]
