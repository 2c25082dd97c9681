"""Snapshot file format v2: round trip, every kind of damage named, streaming in bounded memory.

Files are parsed and, where a test needs a malformed one, built by hand with
``walfiles.frame``/``record_offsets``, independently of zraft/snapshot/format.py.
"""

from __future__ import annotations

import hashlib
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.unit.storage.walfiles import frame, record_offsets
from zraft.core.messages import SnapshotMeta
from zraft.snapshot import format as fmt
from zraft.snapshot.format import (
    Encoder,
    SectionInfo,
    SnapshotError,
    SnapshotHeader,
    read_header,
    read_sections,
    verify,
    write_file,
)
from zraft.storage import CorruptionError, StorageError

H, S, C, E = 0x11, 0x12, 0x13, 0x14  # record types, as the design fixes them
# ensemble, index, term, voters, time_ms, node, created_ms
HDR = SnapshotHeader("ens-1", 42, 3, ("n1", "n2", "n3"), 1234, "n1", 1_700_000_000_000)
SECTIONS = [("@sessions", [b"sessions"]), ("counter", [b"a" * 10, b"b" * 20, b"c"])]
SECTIONS += [("empty", []), ("kv", [b"k" * 7])]


def header_map(**changes: Any) -> dict[str, Any]:
    """The HEADER map of HDR as the design spells it, with ``changes`` (None deletes)."""
    m: dict[str, Any] = dict(format="zraft-snapshot", version=2, ensemble="ens-1", index=42)
    m.update(term=3, voters=["n1", "n2", "n3"], time_ms=1234, node="n1")
    m.update(created_ms=1_700_000_000_000, **changes)
    return {k: v for k, v in m.items() if v is not None}


def header_rec(**changes: Any) -> bytes:
    return frame(H, msgpack.packb(header_map(**changes)))


def end_rec(body: bytes, sections: list[list[Any]], **changes: Any) -> bytes:
    """An END record for ``body`` (the file before it) listing ``sections``."""
    m = {"sections": sections, "sha256": hashlib.sha256(body).digest(), **changes}
    return frame(E, msgpack.packb(m, use_bin_type=True))


def with_end(*records: bytes) -> bytes:
    body = b"".join(records)
    return body + end_rec(body, [])


def records(buf: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, type, payload) of every record in ``buf``, parsed by hand."""
    out, off = [], 0
    while off < len(buf):
        length = int.from_bytes(buf[off : off + 4], "little")
        out.append((off, buf[off + 4], buf[off + 13 : off + 13 + length]))
        off += 13 + length
    return out


@pytest.fixture
def good(tmp_path: Path) -> bytes:
    """The bytes of a small well-formed snapshot file holding SECTIONS."""
    path = tmp_path / "good.snap"
    write_file(path, HDR, SECTIONS)
    return path.read_bytes()


def damaged(tmp_path: Path, buf: bytes) -> Path:
    path = tmp_path / "bad.snap"
    path.write_bytes(buf)
    return path


def read_all(path: Path) -> list[tuple[str, list[bytes]]]:
    return [(name, list(chunks)) for name, chunks in read_sections(path)]


def fails(path: Path, match: str | None = None) -> SnapshotError:
    """verify() and a full read_sections() both fail on ``path`` the same way."""
    with pytest.raises(SnapshotError, match=match) as err:
        verify(path)
    with pytest.raises(SnapshotError) as again:
        read_all(path)
    assert (again.value.offset, again.value.section) == (err.value.offset, err.value.section)
    return err.value


# -- round trip -------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.partial"
    info = write_file(path, HDR, SECTIONS)
    buf = path.read_bytes()
    assert verify(path) == info
    assert info.path == path and info.header == HDR and info.size == len(buf)
    assert read_header(path) == HDR
    assert read_all(path) == SECTIONS
    assert HDR.meta() == SnapshotMeta(42, 3, ("n1", "n2", "n3"))

    recs = records(buf)
    assert [t for _, t, _ in recs] == [H, S, C, S, C, C, C, S, S, C, E]
    assert record_offsets(path) == [off for off, _, _ in recs]
    assert msgpack.unpackb(recs[0][2]) == header_map()
    section_offsets = [off for off, t, _ in recs if t == S]
    assert info.sections == (
        SectionInfo("@sessions", 8, 1, section_offsets[0]),
        SectionInfo("counter", 31, 3, section_offsets[1]),
        SectionInfo("empty", 0, 0, section_offsets[2]),
        SectionInfo("kv", 7, 1, section_offsets[3]),
    )
    end_off, _, end_payload = recs[-1]
    end = msgpack.unpackb(end_payload)
    assert end["sections"] == [
        ["@sessions", 8, 1],
        ["counter", 31, 3],
        ["empty", 0, 0],
        ["kv", 7, 1],
    ]
    assert end["sha256"] == hashlib.sha256(buf[:end_off]).digest()
    assert info.sha256 == end["sha256"].hex()


def test_a_file_with_no_sections_and_a_hand_built_file_verify(tmp_path: Path) -> None:
    info = write_file(tmp_path / "a", HDR, [])
    assert info.sections == () and verify(tmp_path / "a") == info
    # A file built by hand from the design's description is accepted as-is.
    body = header_rec() + frame(S, b"x") + frame(C, b"12") + frame(C, b"") + frame(C, b"3")
    path = damaged(tmp_path, body + end_rec(body, [["x", 3, 3]]))
    assert verify(path).sections == (SectionInfo("x", 3, 3, len(header_rec())),)
    assert read_all(path) == [("x", [b"12", b"", b"3"])]


def test_encoder_output_is_the_file_and_size_counts_it(tmp_path: Path) -> None:
    enc = Encoder(HDR)
    parts = [enc.begin()]
    assert enc.size == len(parts[0])
    for name, chunks in SECTIONS:
        parts.append(enc.section(name))
        parts.extend(enc.chunk(c) for c in chunks)
        assert enc.size == sum(map(len, parts))
    parts.append(enc.end())
    write_file(tmp_path / "f", HDR, SECTIONS)
    assert b"".join(parts) == (tmp_path / "f").read_bytes()
    assert enc.size == len(b"".join(parts))
    assert enc.info(tmp_path / "f") == verify(tmp_path / "f")
    assert Encoder(HDR).begin() == parts[0]  # deterministic


def test_a_chunk_over_max_chunk_is_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "MAX_CHUNK", 10)
    enc = Encoder(HDR)
    enc.begin()
    enc.section("big")
    out = enc.chunk(bytes(range(25)))
    assert [len(p) for _, t, p in records(out)] == [10, 10, 5]
    assert enc.chunk(b"") == b""
    info = write_file(tmp_path / "f", HDR, [("big", [bytes(range(25)), b"", memoryview(b"xy")])])
    assert info.sections[0].size == 27 and info.sections[0].chunks == 4
    assert verify(tmp_path / "f") == info
    assert b"".join(read_all(tmp_path / "f")[0][1]) == bytes(range(25)) + b"xy"

    monkeypatch.setattr(fmt, "MAX_CHUNK", 9)  # a reader with a lower limit: corruption
    err = fails(tmp_path / "f", "CHUNK record of 10 bytes")
    assert err.section == "big"


def test_encoder_calls_out_of_order_raise() -> None:
    enc = Encoder(HDR)
    for call in (enc.end, lambda: enc.section("a"), lambda: enc.chunk(b"x")):
        with pytest.raises(RuntimeError):
            call()
    enc.begin()
    for call in (enc.begin, lambda: enc.chunk(b"x")):  # a second HEADER; a CHUNK before SECTION
        with pytest.raises(RuntimeError):
            call()
    enc.section("a")
    for bad in ("a", "", "x" * 256, "é" * 128, b"bytes"):
        with pytest.raises(ValueError):
            enc.section(bad)  # type: ignore[arg-type]
    enc.section("é" * 127)  # 254 utf-8 bytes
    enc.end()
    for call in (enc.end, lambda: enc.section("b"), lambda: enc.chunk(b"x")):
        with pytest.raises(RuntimeError):
            call()
    with pytest.raises(RuntimeError):
        Encoder(HDR).info("x")


BAD_FIELDS = [{"index": -1}, {"term": 2**63}, {"time_ms": True}, {"created_ms": 1.5}]
BAD_FIELDS += [{"ensemble": 5}, {"node": 7}, {"voters": ["n1"]}, {"voters": ("n1", 2)}]


@pytest.mark.parametrize("change", BAD_FIELDS)
def test_header_fields_are_checked(change: dict[str, Any]) -> None:
    fields = {**header_map(), "voters": ("n1",), **change}
    del fields["format"], fields["version"]
    with pytest.raises(ValueError):
        SnapshotHeader(**fields)


def test_header_extremes_round_trip(tmp_path: Path) -> None:
    hdr = SnapshotHeader("", 2**63 - 1, 2**63 - 1, (), 0, "", 0)
    write_file(tmp_path / "f", hdr, [])
    assert read_header(tmp_path / "f") == hdr == verify(tmp_path / "f").header


# -- damage ------------------------------------------------------------------------------


def where(buf: bytes) -> list[tuple[int, int, str | None]]:
    """For each byte of ``buf``: the start of its record, the record's type, and the section
    a CHUNK record belongs to (None for other records)."""
    out: list[tuple[int, int, str | None]] = []
    section = None
    for off, rtype, payload in records(buf):
        if rtype == S:
            section = payload.decode()
        out.extend([(off, rtype, section if rtype == C else None)] * (13 + len(payload)))
    return out


def test_every_single_byte_flip_is_detected(tmp_path: Path, good: bytes) -> None:
    owners = where(good)
    assert len(owners) == len(good)
    for pos, (start, rtype, section) in enumerate(owners):
        buf = bytearray(good)
        buf[pos] ^= 0xFF
        path = damaged(tmp_path, bytes(buf))
        err = fails(path)
        assert err.offset == start, (pos, str(err))
        assert err.path == str(path) and str(err).startswith(f"{path}: ")
        if rtype == C:
            assert err.section == section, pos
            assert f"section '{section}' at offset {start}: " in str(err)
        if rtype == H or (rtype == E and pos >= start + 13):  # outside sections
            assert err.section is None, pos
            assert f": at offset {start}: " in str(err)
        if start == 0:
            with pytest.raises(SnapshotError):
                read_header(path)
        else:
            assert read_header(path) == HDR


def test_single_bit_flips_are_detected_with_small_read_pieces(
    tmp_path: Path, good: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fmt, "READ_SIZE", 3)  # verify() reads each CHUNK in several pieces
    assert verify(damaged(tmp_path, good)).size == len(good)
    for pos, (start, _, _) in enumerate(where(good)):
        buf = bytearray(good)
        buf[pos] ^= 1 << (pos % 8)
        assert fails(damaged(tmp_path, bytes(buf))).offset == start


def test_truncation_anywhere_is_detected(tmp_path: Path, good: bytes) -> None:
    starts = set(record_offsets(damaged(tmp_path, good)))
    owners = where(good)
    first_end = min(starts - {0})
    for n in range(len(good)):
        path = damaged(tmp_path, good[:n])
        if n == 0:
            err = fails(path, "empty file")
        elif n in starts:  # cut at a record boundary: END is missing
            err = fails(path, "file ends without an END record")
        else:  # cut inside a record
            err = fails(path, "truncated|runs past end of file")
        assert err.offset == (n if n in starts else owners[n][0]), n
        if n < first_end:
            with pytest.raises(SnapshotError):
                read_header(path)
        else:
            assert read_header(path) == HDR


def test_missing_end_names_the_section_it_ends_in(tmp_path: Path, good: bytes) -> None:
    end_off = record_offsets(damaged(tmp_path, good))[-1]
    err = fails(damaged(tmp_path, good[:end_off]))
    assert (err.offset, err.section) == (end_off, "kv")
    assert str(err).endswith(f"section 'kv' at offset {end_off}: file ends without an END record")


def test_data_after_end_is_detected(tmp_path: Path, good: bytes) -> None:
    for tail in (b"\0", frame(C, b"x"), frame(E, b"")):
        err = fails(damaged(tmp_path, good + tail), "after the END record")
        assert err.offset == len(good)


def test_order_violations(tmp_path: Path) -> None:
    h, a, c = header_rec(), frame(S, b"a"), frame(C, b"x")
    cases = {  # reason: (records before the bad one, the bad one)
        "CHUNK record outside any section": ((h,), c),
        "duplicate section 'a'": ((h, a, c), a),
        "second HEADER record": ((h, a), h),
        "first record is SECTION, not HEADER": ((), a),
        "first record is CHUNK, not HEADER": ((), c),
        "unknown record type 0x15": ((h, a), frame(0x15, b"")),
        "empty section name": ((h,), frame(S, b"")),
        "section name is not utf-8": ((h,), frame(S, b"\xff")),
    }
    for reason, (before, bad) in cases.items():
        body = b"".join(before) + bad + a + c
        err = fails(damaged(tmp_path, body + end_rec(body, [])), reason)
        assert err.offset == len(b"".join(before)), reason
    # A file that is only an END record has no HEADER.
    assert fails(damaged(tmp_path, with_end()), "first record is END").offset == 0


def test_record_lengths_over_the_limits_are_corruption(tmp_path: Path) -> None:
    h, a = header_rec(), frame(S, b"a")
    for rtype, length, name in ((C, 16 << 20, "CHUNK"), (S, 255, "SECTION"), (E, 1 << 20, "END")):
        body = h + a
        head = (
            (length + 1).to_bytes(4, "little")
            + bytes([rtype])
            + zlib.crc32(b"").to_bytes(4, "little")
        )
        rec = head + zlib.crc32(head).to_bytes(4, "little")
        err = fails(damaged(tmp_path, body + rec), f"{name} record of {length + 1} bytes")
        assert err.offset == len(body)


def test_a_chunk_rewritten_with_a_valid_crc_fails_the_sha256(tmp_path: Path, good: bytes) -> None:
    recs = records(good)
    body = b"".join(
        frame(t, p.replace(b"b" * 20, b"B" * 20) if t == C else p) for _, t, p in recs[:-1]
    )
    assert body != good[: recs[-1][0]]
    path = damaged(tmp_path, body + frame(E, recs[-1][2]))
    err = fails(path, "sha256 mismatch")
    assert (err.offset, err.section) == (len(body), None)
    # read_sections hands every section out, and fails when asked for one more.
    gen = read_sections(path)
    assert [next(gen)[0] for _ in SECTIONS] == [name for name, _ in SECTIONS]
    with pytest.raises(SnapshotError, match="sha256 mismatch"):
        next(gen)


@pytest.mark.parametrize(
    ("sections", "changes", "reason"),
    [
        ([["a", 2, 1]], {}, "END lists section \\['a', 2, 1\\], the file has \\['a', 1, 1\\]"),
        ([["a", 1, 2]], {}, "END lists section"),
        ([["b", 1, 1]], {}, "END lists section"),
        ([], {}, "END lists 0 sections, the file has 1"),
        ([["a", 1, 1], ["b", 0, 0]], {}, "END lists 2 sections"),
        ([["a", 1, 1]], {"sha256": b"x" * 31}, "sha256 is not 32 bytes"),
        ([["a", 1, 1]], {"sha256": "00" * 32}, "sha256 is not 32 bytes"),
        ([["a", 1, 1]], {"sha256": b"\0" * 32}, "sha256 mismatch"),
        ("nope", {}, "no section list"),
    ],
)
def test_end_must_describe_the_file(
    tmp_path: Path, sections: Any, changes: dict[str, Any], reason: str
) -> None:
    body = header_rec() + frame(S, b"a") + frame(C, b"1")
    err = fails(damaged(tmp_path, body + end_rec(body, sections, **changes)), reason)
    assert (err.offset, err.section) == (len(body), None)


def test_end_that_is_not_a_map(tmp_path: Path) -> None:
    body = header_rec()
    for payload in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"a": 1}) + b"x"):
        err = fails(damaged(tmp_path, body + frame(E, payload)), "bad END")
        assert err.offset == len(body)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"format": "zraft-snap"}, "format is 'zraft-snap'"),
        ({"version": 3}, "unsupported version 3"),
        ({"version": "2"}, "unsupported version '2'"),
        ({"index": -1}, "index must be an int"),
        ({"term": 2**63}, "term must be an int"),
        ({"time_ms": False}, "time_ms must be an int"),
        ({"ensemble": b"e"}, "ensemble must be a string"),
        ({"voters": "n1"}, "voters must be a list"),
        ({"voters": ["n1", 2]}, "voters must be a tuple of strings"),
        ({"node": None}, "missing node"),
    ],
)
def test_header_fields_are_checked_when_read(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    m = header_map(**changes)
    rec = frame(H, msgpack.packb(m, use_bin_type=True))
    path = damaged(tmp_path, with_end(rec))
    err = fails(path, "bad HEADER: .*" + reason)
    assert (err.offset, err.section) == (0, None)
    with pytest.raises(SnapshotError, match=reason):
        read_header(path)


def test_header_that_is_not_a_map(tmp_path: Path) -> None:
    for payload in (b"", b"\xc1", msgpack.packb(["zraft-snapshot", 2])):
        err = fails(damaged(tmp_path, with_end(frame(H, payload))), "bad HEADER")
        assert err.offset == 0


# -- reading -----------------------------------------------------------------------------


def test_read_sections_skips_chunks_left_unread(tmp_path: Path) -> None:
    write_file(tmp_path / "f", HDR, SECTIONS)
    assert [name for name, _ in read_sections(tmp_path / "f")] == [n for n, _ in SECTIONS]
    firsts = [next(chunks, None) for _, chunks in read_sections(tmp_path / "f")]
    assert firsts == [b"sessions", b"a" * 10, None, b"k" * 7]  # the rest were skipped


def test_io_errors_are_storage_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.snap"
    for call in (verify, read_header, read_all):
        with pytest.raises(StorageError) as err:
            call(missing)
        assert not isinstance(err.value, CorruptionError)
    with pytest.raises(StorageError):
        write_file(tmp_path / "no-such-dir" / "f", HDR, SECTIONS)


def test_write_file_removes_its_partial_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fmt.os, "fsync", broken)
    with pytest.raises(StorageError, match="No space left"):
        write_file(tmp_path / "f", HDR, SECTIONS)
    assert not (tmp_path / "f").exists()


def test_snapshot_error_is_a_corruption_error() -> None:
    err = SnapshotError("/d/x.snap", 99, "payload checksum mismatch", "kv")
    assert isinstance(err, CorruptionError)
    assert (err.path, err.offset, err.section) == ("/d/x.snap", 99, "kv")
    assert err.reason == "payload checksum mismatch"
    assert str(err) == "/d/x.snap: section 'kv' at offset 99: payload checksum mismatch"
    assert str(SnapshotError("/d/x.snap", 0, "bad")) == "/d/x.snap: at offset 0: bad"


# -- bounded memory ----------------------------------------------------------------------

MB = 1_000_000


def test_verify_and_read_stream_a_large_file_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.snap"
    block = bytes(range(256)) * (MB // 256) + b"\x07" * (MB % 256)
    enc = Encoder(HDR)
    with open(path, "wb") as f:
        f.write(enc.begin())
        f.write(enc.section("@sessions"))
        f.write(enc.chunk(b"s"))
        f.write(enc.section("big"))
        for _ in range(50):
            f.write(enc.chunk(block))
        f.write(enc.end())
    size = path.stat().st_size
    tracemalloc.start()
    try:
        info = verify(path)
        _, verify_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        for _, chunks in read_sections(path):
            for data in chunks:
                total += len(data)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.sections[1] == SectionInfo("big", 50 * MB, 50, info.sections[1].offset)
    assert total == 50 * MB + 1
    assert info == enc.info(path)
    # One read piece (verify) or one chunk (read_sections) at a time, not the file.
    assert verify_peak < 3 * MB, verify_peak
    assert read_peak < 4 * MB, read_peak
    assert size > 12 * max(verify_peak, read_peak)
