"""The engine every command runs through: order, batching, back-pressure, one failure and interrupt protocol."""

from __future__ import annotations

import threading
import time

import pytest

from esrcli import engine


def record(log: list[str], lock: threading.Lock, entry: str) -> None:
    with lock:
        log.append(entry)


def test_results_come_in_order_in_batches_of_what_is_ready():
    calls: list[list[int]] = []
    written: list[int] = []

    def slow_source():
        for i in range(20):
            if i % 7 == 0:
                time.sleep(0.02)  # the model catches up: batches are what is ready, not waits
            yield i

    def compute(items: list[int]) -> list[int]:
        calls.append(items)
        time.sleep(0.005)
        return [i * 10 for i in items]

    done = engine.run_stages(slow_source(), engine.Stages(compute, written.append, batch=4, read_ahead=8))
    assert done == 20 and written == [i * 10 for i in range(20)]
    assert all(1 <= len(c) <= 4 for c in calls) and [i for c in calls for i in c] == list(range(20))


def test_a_large_result_is_written_before_the_next_is_computed():
    log: list[str] = []
    lock = threading.Lock()

    def compute(items: list[int]) -> list[int]:
        record(log, lock, f"compute {items[0]}")
        return items

    def sink(item: int) -> None:
        time.sleep(0.05)  # a slow encoder
        record(log, lock, f"wrote {item}")

    engine.run_stages(range(3), engine.Stages(compute, sink, budget=100, weigh=lambda item: 150 if item == 0 else 1))
    assert log.index("wrote 0") < log.index("compute 1")  # 150 bytes over a budget of 100: waited for it
    assert log.index("compute 2") < log.index("wrote 1")  # small results do not wait


@pytest.mark.parametrize("where", ["reader", "compute", "writer", "interrupt"])
def test_one_failure_stops_every_stage_and_reaches_the_caller(where):
    written: list[int] = []
    events: list[str] = []
    read = threading.Event()

    def source():
        for i in range(1000):
            if where == "reader" and i == 5:
                raise ValueError("reader broke")
            read.set()
            yield i

    def compute(items: list[int]) -> list[int]:
        if items[0] == 5 and where in ("compute", "interrupt"):
            raise KeyboardInterrupt if where == "interrupt" else ValueError("compute broke")
        return items

    def sink(item: int) -> None:
        if where == "writer" and item == 5:
            raise ValueError("writer broke")
        time.sleep(0.001)
        written.append(item)

    stages = engine.Stages(
        compute,
        sink,
        read_ahead=2,
        write_behind=2,
        finish=lambda: events.append("finish"),
        cancel=lambda: events.append("cancel"),
        abort=lambda: events.append("abort"),
    )
    before = {t.name for t in threading.enumerate()}
    expected = KeyboardInterrupt if where == "interrupt" else ValueError
    with pytest.raises(expected):
        engine.run_stages(source(), stages)
    assert events == ["cancel", "abort"]  # never "finish": nothing is closed as if complete
    assert written == list(range(len(written))) and len(written) <= 5  # in order, and nothing after the failure
    assert not {t.name for t in threading.enumerate()} - before  # both threads ended
