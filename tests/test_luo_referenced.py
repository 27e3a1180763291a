"""``kho capture --from-dump`` keeps what the LUO client references: a
capture cut down to the referenced pages only decodes to the same LUO state,
memfd contents included (the Client.referenced hook of clients/luo/client.py and
clients/memfd.py)."""

from __future__ import annotations

from _luo import LUO_CAP

from kho_formats.model.clients import decode_clients
from kho_formats.ops.capture import load_capture, parse_capture
from kho_formats.ops.extract import handover_image, referenced_ranges


def _luo(path, mem=()):
    cap = load_capture(path, list(mem))
    st = parse_capture(cap)
    reps = decode_clients(st, cap.image)
    return cap, st, reps


def test_referenced_only_image_keeps_the_luo_state() -> None:
    cap, st, reps = _luo(LUO_CAP)
    luo = reps["LUO"].decoded
    ranges = referenced_ranges(st, reps)
    # every block, the FLB page, each memfd_luo_ser and every folio is kept
    pages = [b.phys for b in luo.session_blocks] + [b.phys for s in luo.sessions for b in s.blocks]
    pages += [luo.ser.flbs_pa] + [f.decoded.ser_phys for _, f in luo.files()]
    pages += [p for _, f in luo.files() for p in f.decoded.phys.tolist()]
    for p in pages:
        assert any(a <= p < b for a, b in ranges), hex(p)
    small = handover_image(cap.image, st, reps, referenced_only=True)
    assert small.total_bytes < cap.image.total_bytes
    st2 = parse_capture(load_capture(LUO_CAP))
    reps2 = decode_clients(st2, small)
    assert reps2["LUO"].error is None
    assert reps2["LUO"].client.to_json(reps2["LUO"].decoded) == reps["LUO"].client.to_json(luo)
    for (_, f), (_, g) in zip(luo.files(), reps2["LUO"].decoded.files()):
        a = b"".join(bytes(v) for _, v in f.handler.contents(f.decoded, cap.image, st.page_size))
        b = b"".join(bytes(v) for _, v in g.handler.contents(g.decoded, small, st.page_size))
        assert a == b
