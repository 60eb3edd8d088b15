"""The ISO BMFF boxes of an AVIF file, where esr needs what Pillow does not say or write.

Two jobs only: the bit depth an AVIF's primary image is coded in (its `av1C` property), and adding
an ICC profile (a `colr` property of type `prof`) and EXIF (an `Exif` item described by the primary
image) to an AVIF that ffmpeg wrote, since its muxer keeps neither. The `meta` box is rebuilt with
the additions, every file offset behind it moves by the bytes it grew, and the EXIF payload goes in
a `mdat` box of its own at the end of the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass


class BoxError(ValueError):
    """A file whose boxes do not fit together."""


@dataclass
class _Box:
    kind: bytes
    start: int  # of the box header
    body: int  # of its payload
    end: int


def _boxes(data: bytes, start: int, end: int) -> list[_Box]:
    out: list[_Box] = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise BoxError(f"box {kind!r} is cut short")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise BoxError(f"box {kind!r} runs past its parent")
        out.append(_Box(kind, pos, pos + header, pos + size))
        pos += size
    return out


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def _uint(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos : pos + size], "big") if size else 0


def _first(boxes: list[_Box], kind: bytes) -> _Box | None:
    return next((b for b in boxes if b.kind == kind), None)


# --- reading -----------------------------------------------------------------------------------

_MAX_META = 64 << 20  # a meta box is a few kB; anything this large is not a picture's


def read_meta(path: str | os.PathLike[str]) -> bytes | None:
    """The file's top-level `meta` box, read without reading the pixels around it (None if absent)."""
    with open(path, "rb") as f:
        total = f.seek(0, os.SEEK_END)
        pos = 0
        while pos + 8 <= total:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack_from(">I4s", head)
            header = 8
            if size == 1 and len(head) == 16:
                (size,) = struct.unpack_from(">Q", head, 8)
                header = 16
            elif size == 0:
                size = total - pos
            if size < header:
                return None
            if kind == b"meta":
                if size > _MAX_META:
                    return None
                f.seek(pos)
                return f.read(size)
            pos += size
    return None


def _primary_id(meta: bytes, children: list[_Box]) -> int | None:
    pitm = _first(children, b"pitm")
    if pitm is None:
        return None
    return _uint(meta, pitm.body + 4, 2 if meta[pitm.body] == 0 else 4)


def avif_depth(path: str | os.PathLike[str]) -> int | None:
    """8, 10 or 12: the bit depth of an AVIF's primary image, from its av1C property (None if unknown)."""
    try:
        meta = read_meta(path)
        if meta is None:
            return None
        children = _boxes(meta, _boxes(meta, 0, len(meta))[0].body + 4, len(meta))
        iprp = _first(children, b"iprp")
        if iprp is None:
            return None
        inner = _boxes(meta, iprp.body, iprp.end)
        ipco = _first(inner, b"ipco")
        if ipco is None:
            return None
        props = _boxes(meta, ipco.body, ipco.end)
        primary = _primary_id(meta, children)
        chosen = None
        for ipma in (b for b in inner if b.kind == b"ipma"):
            _, _, entries = _parse_ipma(meta[ipma.body : ipma.end])
            for item, links in entries:
                if item == primary:
                    found = [props[i - 1] for _, i in links if 0 < i <= len(props) and props[i - 1].kind == b"av1C"]
                    chosen = found[0] if found else chosen
        # A grid's av1C sits on its tiles, not on the grid item: any av1C then tells the depth.
        chosen = chosen or _first(props, b"av1C")
        if chosen is None or chosen.end - chosen.body < 4:
            return None
        flags = meta[chosen.body + 2]
        high, twelve = (flags >> 6) & 1, (flags >> 5) & 1
        return 12 if high and twelve else 10 if high else 8
    except (OSError, BoxError, IndexError, struct.error):
        return None


# --- item properties and locations -------------------------------------------------------------


def _parse_ipma(payload: bytes) -> tuple[int, int, list[tuple[int, list[tuple[bool, int]]]]]:
    version, flags = payload[0], _uint(payload, 1, 3)
    (count,) = struct.unpack_from(">I", payload, 4)
    pos, entries = 8, []
    for _ in range(count):
        id_size = 2 if version < 1 else 4
        item = _uint(payload, pos, id_size)
        n = payload[pos + id_size]
        pos += id_size + 1
        links = []
        for _ in range(n):
            if flags & 1:
                v = _uint(payload, pos, 2)
                links.append((bool(v >> 15), v & 0x7FFF))
                pos += 2
            else:
                v = payload[pos]
                links.append((bool(v >> 7), v & 0x7F))
                pos += 1
        entries.append((item, links))
    return version, flags, entries


def _build_ipma(version: int, flags: int, entries: list[tuple[int, list[tuple[bool, int]]]]) -> bytes:
    if any(i > 0x7F for _, links in entries for _, i in links):
        flags |= 1
    if any(item > 0xFFFF for item, _ in entries):
        version = max(version, 1)
    out = bytearray(struct.pack(">I", len(entries)))
    for item, links in entries:
        out += item.to_bytes(2 if version < 1 else 4, "big") + bytes([len(links)])
        for essential, i in links:
            out += ((essential << 15) | i).to_bytes(2, "big") if flags & 1 else bytes([(essential << 7) | i])
    return _full(b"ipma", version, flags, bytes(out))


@dataclass
class _Location:
    item: int
    method: int  # construction_method: 0 file offset, 1 idat, 2 item
    reference: int  # data_reference_index
    base: int
    extents: list[tuple[int, int, int]]  # (index, offset, length)


@dataclass
class _Iloc:
    version: int
    index_size: int
    items: list[_Location]


def _parse_iloc(payload: bytes) -> _Iloc:
    version = payload[0]
    offset_size, length_size = payload[4] >> 4, payload[4] & 15
    base_size, index_size = payload[5] >> 4, (payload[5] & 15) if version in (1, 2) else 0
    pos = 6
    count = _uint(payload, pos, 2 if version < 2 else 4)
    pos += 2 if version < 2 else 4
    items = []
    for _ in range(count):
        item = _uint(payload, pos, 2 if version < 2 else 4)
        pos += 2 if version < 2 else 4
        method = 0
        if version in (1, 2):
            method = _uint(payload, pos, 2) & 15
            pos += 2
        reference = _uint(payload, pos, 2)
        base = _uint(payload, pos + 2, base_size)
        pos += 2 + base_size
        n = _uint(payload, pos, 2)
        pos += 2
        extents = []
        for _ in range(n):
            index = _uint(payload, pos, index_size)
            pos += index_size
            offset = _uint(payload, pos, offset_size)
            length = _uint(payload, pos + offset_size, length_size)
            pos += offset_size + length_size
            extents.append((index, offset, length))
        items.append(_Location(item, method, reference, base, extents))
    if pos > len(payload):
        raise BoxError("iloc is cut short")
    return _Iloc(version, index_size, items)


def _build_iloc(iloc: _Iloc, wide: bool) -> bytes:
    size = 8 if wide else 4
    version = iloc.version if iloc.version in (1, 2) or all(loc.method == 0 for loc in iloc.items) else 1
    if any(loc.item > 0xFFFF for loc in iloc.items) or len(iloc.items) > 0xFFFF:
        version = 2
    index_size = iloc.index_size if version in (1, 2) else 0
    id_size = 2 if version < 2 else 4
    out = bytearray([(size << 4) | size, (size << 4) | index_size])
    out += len(iloc.items).to_bytes(id_size, "big")
    for loc in iloc.items:
        out += loc.item.to_bytes(id_size, "big")
        if version in (1, 2):
            out += loc.method.to_bytes(2, "big")
        out += loc.reference.to_bytes(2, "big") + loc.base.to_bytes(size, "big") + len(loc.extents).to_bytes(2, "big")
        for index, offset, length in loc.extents:
            out += index.to_bytes(index_size, "big") + offset.to_bytes(size, "big") + length.to_bytes(size, "big")
    return _full(b"iloc", version, 0, bytes(out))


def _item_ids(meta: bytes, children: list[_Box], iloc: _Iloc) -> tuple[set[int], dict[int, bytes]]:
    """Every item's ID, and each one's type (from iinf)."""
    ids = {loc.item for loc in iloc.items}
    types: dict[int, bytes] = {}
    iinf = _first(children, b"iinf")
    if iinf is not None:
        start = iinf.body + 4 + (2 if meta[iinf.body] == 0 else 4)
        for infe in _boxes(meta, start, iinf.end):
            if infe.kind != b"infe" or meta[infe.body] < 2:
                continue
            wide = meta[infe.body] >= 3
            item = _uint(meta, infe.body + 4, 4 if wide else 2)
            at = infe.body + 4 + (4 if wide else 2) + 2
            ids.add(item)
            types[item] = meta[at : at + 4]
    return ids, types


# --- adding an ICC profile and EXIF ------------------------------------------------------------


def add_avif_metadata(data: bytes, *, icc: bytes | None, exif: bytes | None) -> bytes:
    """The AVIF file `data` with an ICC profile and EXIF (bytes starting "Exif\\0\\0" or a TIFF
    header) added to its primary image; what it already holds of either is left as it is."""
    if not icc and not exif:
        return data
    top = _boxes(data, 0, len(data))
    meta_box = _first(top, b"meta")
    if meta_box is None:
        raise BoxError("no meta box")
    meta = data[meta_box.start : meta_box.end]
    head = meta_box.body - meta_box.start
    children = _boxes(meta, head + 4, len(meta))
    primary = _primary_id(meta, children)
    iloc_box, iprp = _first(children, b"iloc"), _first(children, b"iprp")
    if primary is None or iloc_box is None or iprp is None:
        raise BoxError("no primary item, iloc or iprp")
    iloc = _parse_iloc(meta[iloc_box.body : iloc_box.end])
    ids, types = _item_ids(meta, children, iloc)

    replaced: dict[int, bytes] = {}  # start of a child of meta -> what takes its place
    extra: list[bytes] = []  # children to add

    if icc:
        new_iprp = _with_icc(meta, iprp, primary, icc)
        if new_iprp is not None:
            replaced[iprp.start] = new_iprp

    payload, exif_id = b"", 0
    if exif and b"Exif" not in types.values():
        payload, exif_id = _add_exif_item(meta, children, ids, iloc, primary, exif, replaced, extra)

    wide = len(data) + len(icc or b"") + len(payload) + (1 << 16) > 0xFFFFFFFF
    old_end = meta_box.end

    def build(delta: int, exif_offset: int) -> bytes:
        locations = _Iloc(iloc.version, iloc.index_size, [])
        for loc in iloc.items:
            if loc.item == exif_id and payload:
                locations.items.append(_Location(loc.item, 0, 0, 0, [(0, exif_offset, len(payload))]))
            elif loc.method != 0 or loc.reference != 0:
                locations.items.append(loc)  # in idat or another item: no file offset to move
            elif loc.base >= old_end:
                locations.items.append(_Location(loc.item, 0, 0, loc.base + delta, loc.extents))
            else:
                moved = [(i, o + delta if loc.base + o >= old_end else o, n) for i, o, n in loc.extents]
                locations.items.append(_Location(loc.item, 0, 0, loc.base, moved))
        body = bytearray(meta[head : head + 4])
        for child in children:
            if child is iloc_box:
                body += _build_iloc(locations, wide)
            else:
                body += replaced.get(child.start, meta[child.start : child.end])
        for box in extra:
            body += box
        return _box(b"meta", bytes(body))

    delta = len(build(0, 0)) - len(meta)
    new_meta = build(delta, len(data) + delta + 8)
    out = bytearray()
    for box in top:
        out += new_meta if box is meta_box else data[box.start : box.end]
    if payload:
        out += _box(b"mdat", payload)
    return bytes(out)


def _add_exif_item(
    meta: bytes,
    children: list[_Box],
    ids: set[int],
    iloc: _Iloc,
    primary: int,
    exif: bytes,
    replaced: dict[int, bytes],
    extra: list[bytes],
) -> tuple[bytes, int]:
    """An EXIF item for the primary image: its entry in iinf, a cdsc reference in iref and a location in
    iloc (filled in when the file is rebuilt). Changes `replaced`, `extra` and `iloc` in place; returns the
    item's payload and id."""
    tiff = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    payload = b"\x00\x00\x00\x00" + tiff  # exif_tiff_header_offset, then the TIFF structure
    exif_id = max(ids | {0}) + 1
    iinf = _first(children, b"iinf")
    infe_version = 2 if exif_id <= 0xFFFF else 3
    infe = _full(b"infe", infe_version, 0, exif_id.to_bytes(2 if infe_version == 2 else 4, "big") + b"\x00\x00Exif\x00")
    if iinf is None:
        extra.append(_full(b"iinf", 0, 0, b"\x00\x01" + infe))
    else:
        version = meta[iinf.body]
        count_size = 2 if version == 0 else 4
        count = _uint(meta, iinf.body + 4, count_size) + 1
        if version == 0 and count > 0xFFFF:
            version, count_size = 1, 4
        entries = meta[iinf.body + 4 + (2 if meta[iinf.body] == 0 else 4) : iinf.end]
        replaced[iinf.start] = _full(b"iinf", version, 0, count.to_bytes(count_size, "big") + entries + infe)
    iref = _first(children, b"iref")
    wide = max(exif_id, primary) > 0xFFFF or (iref is not None and meta[iref.body] == 1)
    size = 4 if wide else 2
    cdsc = _box(b"cdsc", exif_id.to_bytes(size, "big") + (1).to_bytes(2, "big") + primary.to_bytes(size, "big"))
    if iref is None:
        extra.append(_full(b"iref", int(wide), 0, cdsc))
    else:
        replaced[iref.start] = _full(b"iref", meta[iref.body], 0, meta[iref.body + 4 : iref.end] + cdsc)
    iloc.items.append(_Location(exif_id, 0, 0, 0, [(0, 0, len(payload))]))
    return payload, exif_id


_TRANSFORMATIVE = {b"irot", b"imir", b"clap", b"iscl"}


def _with_icc(meta: bytes, iprp: _Box, primary: int, icc: bytes) -> bytes | None:
    """iprp with a `colr` `prof` property for the primary item, or None if it already has a profile."""
    inner = _boxes(meta, iprp.body, iprp.end)
    ipco = _first(inner, b"ipco")
    if ipco is None:
        raise BoxError("no ipco")
    props = _boxes(meta, ipco.body, ipco.end)
    parsed = {b.start: _parse_ipma(meta[b.body : b.end]) for b in inner if b.kind == b"ipma"}
    for _, _, entries in parsed.values():
        for item, links in entries:
            for _, i in links if item == primary else ():
                prop = props[i - 1] if 0 < i <= len(props) else None
                if prop is not None and prop.kind == b"colr" and meta[prop.body : prop.body + 4] in (b"prof", b"rICC"):
                    return None
    index = len(props) + 1
    new_ipco = _box(b"ipco", meta[ipco.body : ipco.end] + _box(b"colr", b"prof" + icc))
    target = next((s for s, (_, _, entries) in parsed.items() if any(item == primary for item, _ in entries)), None)
    if target is None:
        target = next(iter(parsed), None)
    if target is None:
        raise BoxError("no ipma")
    out = bytearray()
    for b in inner:
        if b is ipco:
            out += new_ipco
        elif b.start == target:
            version, flags, entries = parsed[b.start]
            new_entries = []
            placed = False
            for item, links in entries:
                if item == primary:
                    # Descriptive properties come before transformative ones (rotation, mirror, crop).
                    at = next(
                        (k for k, (_, i) in enumerate(links) if 0 < i <= len(props) and props[i - 1].kind in _TRANSFORMATIVE), len(links)
                    )
                    links = [*links[:at], (False, index), *links[at:]]
                    placed = True
                new_entries.append((item, links))
            if not placed:
                new_entries.append((primary, [(False, index)]))
                new_entries.sort(key=lambda e: e[0])
            out += _build_ipma(version, flags, new_entries)
        else:
            out += meta[b.start : b.end]
    return _box(b"iprp", bytes(out))
