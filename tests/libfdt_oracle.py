"""Replay a root-FDT history through the real libfdt (Debian's ``python3-libfdt``)
and print the blob: an oracle for ``tests/test_fdt_history.py``, independent of
``kho_formats.model.fdt``.  Run by the system Python that has the ``libfdt`` module:

    echo '{...}' | /usr/bin/python3 tests/libfdt_oracle.py

Input (JSON on stdin)::

    {"page": 4096,
     "sequential": {"props": [[name, hex], ...], "children": [{"name": n, "props": [...]}, ...]},
     "edits": [{"add": name, "props": [[name, hex], ...]}, {"remove": name}, ...]}

``sequential`` is written with libfdt's sequential-write calls into a
``page``-byte buffer (``fdt_create`` .. ``fdt_finish``), as
``kho_out_fdt_setup()`` (and kho-v1's finalize) do; each edit then reopens the
blob in a ``page``-byte buffer (``fdt_open_into``), adds a sub-node of the root
and sets its properties in the order given (``fdt_add_subnode``,
``fdt_setprop``), or deletes the named sub-node (``fdt_del_node``), and packs
it (``fdt_pack``), as ``kho_add_subtree()`` / ``kho_remove_subtree()`` do.
Output: the blob's ``totalsize`` bytes, hex, on stdout.
"""

import json
import sys

import libfdt


def main() -> int:
    spec = json.load(sys.stdin)
    page = spec["page"]
    sw = libfdt.FdtSw(page)
    sw.finish_reservemap()
    sw.begin_node("")
    seq = spec["sequential"]
    for name, value in seq["props"]:
        sw.property(name, bytes.fromhex(value))
    for child in seq.get("children", []):
        sw.begin_node(child["name"])
        for name, value in child["props"]:
            sw.property(name, bytes.fromhex(value))
        sw.end_node()
    sw.end_node()
    fdt = sw.as_fdt()  # fdt_finish on a copy of the page-sized buffer
    for edit in spec.get("edits", []):
        fdt.resize(page)  # fdt_open_into(old, new page-sized buffer)
        if "add" in edit:
            off = fdt.add_subnode(0, edit["add"])
            for name, value in edit["props"]:
                fdt.setprop(off, name, bytes.fromhex(value))
        else:
            fdt.del_node(fdt.subnode_offset(0, edit["remove"]))
        fdt.pack()
    blob = bytes(fdt.as_bytearray())
    sys.stdout.write(blob[: fdt.totalsize()].hex() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
