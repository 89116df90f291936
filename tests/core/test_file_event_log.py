"""The embedded event log: segment files that the analytics job's Spark file source can follow."""

from __future__ import annotations

import threading
from pathlib import Path

from cloudshop.stream import FileEventLog


def test_each_publish_is_one_immutable_segment_named_by_its_first_offset(tmp_path: Path) -> None:
    log = FileEventLog(tmp_path)
    log.publish("orders", [("o1", '{"n": 1}'), ("o1", '{"n": 2}')])
    log.publish("orders", [("o2", '{"n": 3}')])
    log.publish("orders", [])

    segments = sorted(p.name for p in (tmp_path / "orders").glob("*.jsonl"))
    assert segments == ["00000000000000000000.jsonl", "00000000000000000002.jsonl"]
    assert [e["n"] for e in log.read("orders")] == [1, 2, 3]
    assert not list((tmp_path / "orders").glob(".*.tmp")), "no temporary file is left visible"


def test_concurrent_writers_never_share_or_lose_an_offset(tmp_path: Path) -> None:
    writers = [FileEventLog(tmp_path) for _ in range(4)]  # as if four processes

    def publish(log: FileEventLog, start: int) -> None:
        for n in range(start, start + 25):
            log.publish("orders", [(str(n), f'{{"n": {n}}}')])

    threads = [threading.Thread(target=publish, args=(w, i * 100)) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    offsets = sorted(int(p.stem) for p in (tmp_path / "orders").glob("*.jsonl"))
    assert offsets == list(range(100))
    assert sorted(e["n"] for e in writers[0].read("orders")) == sorted(
        n for i in range(4) for n in range(i * 100, i * 100 + 25)
    )
