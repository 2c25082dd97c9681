"""``zraft snapshot inspect`` and ``restore`` on files (no node runs): what they print,
what restore writes, and that every refusal leaves the data directory untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zraft.builtin.kv_snapshot import Cow, chunks
from zraft.cli import main
from zraft.cli.snapshot import _leader
from zraft.core import HardState
from zraft.snapshot.format import SnapshotHeader, write_file
from zraft.snapshot.recovery import recover
from zraft.snapshot.store import SnapshotStore, file_name
from zraft.storage.wal import WalStorage

HEADER = SnapshotHeader(
    "prod", 1200, 3, ("n1", "n2", "n3"), 1_700_000_000_500, "n2", 1_700_000_000_000
)


def snapshot_file(path: Path, header: SnapshotHeader = HEADER, keys: int = 5000) -> Path:
    data = {f"k{i}": i for i in range(keys)}
    write_file(path, header, [("@sessions", [b"\x90"]), ("kv", chunks(Cow(data, {})))])
    return path


def ensemble(tmp_path: Path, name: str = "prod") -> Path:
    toml = f'[ensemble]\nname = "{name}"\n'
    for i in (1, 2, 3):
        toml += (
            f'[[node]]\nid = "n{i}"\nraft = "tcp://127.0.0.1:{7100 + i}"\n'
            f'client = "tcp://127.0.0.1:{7200 + i}"\ndata_dir = "{tmp_path / f"n{i}"}"\n'
        )
    path = tmp_path / "ensemble.toml"
    path.write_text(toml)
    return path


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (the data directory's whole content)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_inspect_describes_header_sections_and_key_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = snapshot_file(tmp_path / "backup.snap")
    assert main(["snapshot", "inspect", str(snap), "-w", "json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["ensemble"] == "prod" and facts["index"] == 1200 and facts["term"] == 3
    assert facts["voters"] == ["n1", "n2", "n3"] and facts["node"] == "n2"
    assert facts["created"] == "2023-11-14T22:13:20.000Z" and facts["time_ms"] == 1_700_000_000_500
    assert facts["size"] == snap.stat().st_size and len(facts["sha256"]) == 64
    sessions, kv = facts["sections"]
    assert sessions == {"name": "@sessions", "bytes": 1, "chunks": 1, "keys": None}
    assert kv["name"] == "kv" and kv["keys"] == 5000 and kv["chunks"] >= 2
    assert main(["snapshot", "inspect", str(snap)]) == 0
    text = capsys.readouterr().out
    assert "index     1200" in text and "kv" in text and "5000" in text


def test_inspect_of_a_damaged_file_names_the_section_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = snapshot_file(tmp_path / "backup.snap")
    raw = bytearray(snap.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    snap.write_bytes(bytes(raw))
    assert main(["snapshot", "inspect", str(snap)]) == 1
    err = capsys.readouterr().err
    assert str(snap) in err and "section 'kv' at offset" in err


def test_restore_seeds_an_empty_data_dir_that_a_node_starts_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = snapshot_file(tmp_path / "backup.snap")
    config = ensemble(tmp_path)
    (tmp_path / "n2").mkdir()  # an empty directory is as good as a missing one
    for nid in ("n1", "n2"):
        assert main(["snapshot", "restore", str(snap), "--node", nid, "-c", str(config)]) == 0
        assert "restored" in capsys.readouterr().out
        data_dir = tmp_path / nid
        published = data_dir / "snap" / file_name(1200, 3)
        assert published.read_bytes() == snap.read_bytes()
        wal = WalStorage(data_dir)
        rec = wal.open()
        assert rec.hard_state == HardState(term=3, commit=1200)
        assert (rec.snapshot.index, rec.snapshot.term, rec.entries) == (1200, 3, [])
        start = recover(SnapshotStore(data_dir / "snap"), wal, rec, "prod")
        wal.close()
        assert start.snapshot is not None and start.snapshot.path == published
        assert start.log_start.index == 1200


def test_restore_refuses_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ensemble(tmp_path)
    good = snapshot_file(tmp_path / "good.snap")
    alien = tmp_path / "alien.snap"
    write_file(alien, HEADER, [("@sessions", [b"\x90"]), ("kv", [b""]), ("counter", [b"1"])])
    other = tmp_path / "other.snap"
    snapshot_file(other, SnapshotHeader("staging", 5, 1, ("n1",), 0, "n1", 0), keys=3)
    damaged = tmp_path / "damaged.snap"
    raw = bytearray(good.read_bytes())
    raw[-40] ^= 0x01
    damaged.write_bytes(bytes(raw))
    busy = tmp_path / "n1"
    busy.mkdir()
    (busy / "wal").mkdir()
    (busy / "wal" / "segment").write_bytes(b"old log")
    before = tree(tmp_path)

    def restore(file: Path, node: str) -> str:
        assert main(["snapshot", "restore", str(file), "--node", node, "-c", str(config)]) == 1
        return capsys.readouterr().err

    assert "not empty" in restore(good, "n1")
    assert "ensemble 'staging', not 'prod'" in restore(other, "n2")
    err = restore(damaged, "n2")
    assert "damaged snapshot" in err and str(damaged) in err and "at offset" in err
    assert "no node 'n9'" in restore(good, "n9")
    assert "does not fit the node's plugins" in restore(alien, "n2")
    assert tree(tmp_path) == before
    assert not (tmp_path / "n2").exists()


def test_the_leader_is_the_one_of_the_highest_term_answered_or_known() -> None:
    def row(ep: str, nid: str, role: str, term: int, leader: str | None) -> dict:
        client = {"n1": "tcp://a:1", "n2": "tcp://b:1", "n3": "tcp://c:1"}.get(leader or "")
        st = {"id": nid, "role": role, "term": term, "leader": leader, "leader_client": client}
        return {"endpoint": ep, "status": st}

    stale = row("tcp://x:1", "n1", "leader", 2, "n1")  # a deposed leader, cut off
    follower = row("tcp://y:1", "n2", "follower", 3, "n3")
    assert _leader([stale, follower]) == [("n3", "tcp://c:1")]  # known only by its address
    leader = row("tcp://z:1", "n3", "leader", 3, "n3")
    assert _leader([stale, follower, leader]) == [("n3", "tcp://z:1")]  # the address that answered
    assert _leader([row("tcp://y:1", "n2", "candidate", 4, None)]) == []
