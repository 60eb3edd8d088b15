"""How frames and pictures flow: one bounded reader -> compute -> writer pipeline for every command.

A reader thread pulls items from a source (decoding files or video frames: codecs release the GIL),
the calling thread runs the model on batches of what is ready (so Ctrl-C and the device's context
stay in the main thread), and a writer thread hands each result, in order, to a sink (encoding and
writing). Queues are bounded by count, and results also by bytes, so a large picture is written
before the next one is upscaled. Nothing polls: every wait is on a queue or a condition.

One failure protocol: an exception in the reader or the writer stops the run and is raised in the
calling thread; an exception there (an interrupt included) stops the reader, drops the results not
yet written, lets the writer finish the item it is writing, calls `abort`, and propagates.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_END = object()  # the source is exhausted: finish cleanly
_ABORT = object()  # stop without finishing what the sink has open
_STOPPED = object()  # the reader stopped early because the run is stopping


class _Raised:
    """An exception carried from a worker thread to the calling thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass
class Stages(Generic[Item, Result]):
    """What one run plugs into the pipeline.

    compute(items) -> results, one per item, in order (items of one call are what was ready, up to
    `batch`); sink(result) runs in the writer thread; finish() runs there after the last result
    (closing an encoder); abort() runs in the calling thread after a failure or an interrupt, once
    the writer has stopped (dropping an unfinished segment). `weigh(result)` is its size in bytes, for
    `budget`: the results waiting for the writer, or being written, never exceed it by more than one."""

    compute: Callable[[list[Item]], list[Result]]
    sink: Callable[[Result], None]
    batch: int = 1
    read_ahead: int = 2
    write_behind: int = 2
    budget: int = 256 << 20
    weigh: Callable[[Result], int] | None = None
    finish: Callable[[], None] | None = None
    cancel: Callable[[], None] | None = None
    abort: Callable[[], None] | None = None


class _Backlog:
    """Bytes of results handed to the writer and not yet written."""

    def __init__(self) -> None:
        self.bytes = 0
        self.changed = threading.Condition()

    def add(self, n: int) -> None:
        with self.changed:
            self.bytes += n

    def done(self, n: int) -> None:
        with self.changed:
            self.bytes -= n
            self.changed.notify_all()

    def wait_below(self, limit: int) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.bytes < limit)


def run_stages(source: Iterable[Item], stages: Stages[Item, Result], *, on_computed: Callable[[int], None] | None = None) -> int:
    """Every item of `source` through compute and sink; returns how many were computed.

    `on_computed(n)` is called in the calling thread after each compute call with the count so far."""
    loaded: queue.Queue = queue.Queue(maxsize=max(1, stages.read_ahead))
    results: queue.Queue = queue.Queue(maxsize=max(1, stages.write_behind))
    stop = threading.Event()
    backlog = _Backlog()
    writer_failed: list[BaseException] = []

    def read() -> None:
        iterator: Iterator[Item] = iter(source)
        last: object = _END
        try:
            while not stop.is_set():
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                loaded.put(item)
            else:
                last = _STOPPED
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread
            last = _Raised(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator's own cleanup (a decoder it started) runs now
                close()
            loaded.put(last)  # always a last word, so the calling thread never waits in vain

    def write() -> None:
        try:
            while (entry := results.get()) is not _END:
                if entry is _ABORT:
                    return
                result, size = entry
                try:
                    stages.sink(result)
                finally:
                    backlog.done(size)
            if stages.finish:
                stages.finish()
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread
            writer_failed.append(exc)
            stop.set()
            while (entry := results.get()) is not _END and entry is not _ABORT:  # never leave the calling thread blocked
                backlog.done(entry[1])

    reader = threading.Thread(target=read, name="esr-reader", daemon=True)
    writer = threading.Thread(target=write, name="esr-writer", daemon=True)
    reader.start()
    writer.start()
    reader_done = False
    computed = 0
    try:
        while not reader_done:
            items: list[Item] = []
            while len(items) < stages.batch:  # what is ready, waiting only for the first
                try:
                    entry = loaded.get() if not items else loaded.get_nowait()
                except queue.Empty:
                    break
                if entry is _END or entry is _STOPPED or isinstance(entry, _Raised):
                    reader_done = True
                    if isinstance(entry, _Raised):
                        raise entry.exc
                    break
                items.append(entry)
            if writer_failed:
                raise writer_failed[0]
            if not items:
                continue
            backlog.wait_below(stages.budget)
            if writer_failed:
                raise writer_failed[0]
            outputs = stages.compute(items)
            computed += len(items)
            for output in outputs:
                size = stages.weigh(output) if stages.weigh else 0
                backlog.add(size)
                results.put((output, size))
            if on_computed:
                on_computed(computed)
        results.put(_END)
        writer.join()
        if writer_failed:
            raise writer_failed[0]
    except BaseException:
        stop.set()
        if stages.cancel:
            stages.cancel()
        _stop_writer(results, writer)
        if stages.abort:
            stages.abort()
        raise
    finally:
        stop.set()
        while not reader_done:  # let a reader blocked on a full queue finish, and wait for its last word
            entry = loaded.get()
            reader_done = entry is _END or entry is _STOPPED or isinstance(entry, _Raised)
        reader.join()
    return computed


def _stop_writer(results: queue.Queue, writer: threading.Thread) -> None:
    """Drop the results not yet written and tell the writer to stop after the one it is on."""
    while True:
        try:
            results.get_nowait()
        except queue.Empty:
            break
    results.put(_ABORT)  # there is room: only this thread puts, and the queue was just emptied
    writer.join()
