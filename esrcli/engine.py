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


class _Pipeline(Generic[Item, Result]):
    """The queues and flags one run_stages call shares between its reader, compute and writer stages."""

    def __init__(self, source: Iterable[Item], stages: Stages[Item, Result]) -> None:
        self.source, self.stages = source, stages
        self.loaded: queue.Queue = queue.Queue(maxsize=max(1, stages.read_ahead))
        self.results: queue.Queue = queue.Queue(maxsize=max(1, stages.write_behind))
        self.stop = threading.Event()
        self.backlog = _Backlog()
        self.writer_failed: list[BaseException] = []
        self.reader_done = False  # the reader's last word (_END, _STOPPED or _Raised) was taken from `loaded`

    def read(self) -> None:
        """The reader thread: items into `loaded` until the source ends or the run stops, then a last word."""
        iterator: Iterator[Item] = iter(self.source)
        last: object = _END
        try:
            while not self.stop.is_set():
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                self.loaded.put(item)
            else:
                last = _STOPPED
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread
            last = _Raised(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator's own cleanup (a decoder it started) runs now
                close()
            self.loaded.put(last)  # always a last word, so the calling thread never waits in vain

    def write(self) -> None:
        """The writer thread: each result to the sink in order, then finish(); a failure stops the run."""
        try:
            while (entry := self.results.get()) is not _END:
                if entry is _ABORT:
                    return
                result, size = entry
                try:
                    self.stages.sink(result)
                finally:
                    self.backlog.done(size)
            if self.stages.finish:
                self.stages.finish()
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread
            self.writer_failed.append(exc)
            self.stop.set()
            while (entry := self.results.get()) is not _END and entry is not _ABORT:  # never leave the calling thread blocked
                self.backlog.done(entry[1])

    def compute_all(self, on_computed: Callable[[int], None] | None) -> int:
        """The calling thread's stage: batches of what the reader has ready through compute, to the writer."""
        computed = 0
        while not self.reader_done:
            items = self._ready_items()
            self._raise_if_writer_failed()
            if not items:
                continue
            self.backlog.wait_below(self.stages.budget)
            self._raise_if_writer_failed()
            outputs = self.stages.compute(items)
            computed += len(items)
            self._to_writer(outputs)
            if on_computed:
                on_computed(computed)
        return computed

    def _ready_items(self) -> list[Item]:
        """Up to `batch` items, waiting only for the first; the reader's last word ends the reading (its exception is raised)."""
        items: list[Item] = []
        while len(items) < self.stages.batch:
            try:
                entry = self.loaded.get() if not items else self.loaded.get_nowait()
            except queue.Empty:
                break
            if _is_last_word(entry):
                self.reader_done = True
                if isinstance(entry, _Raised):
                    raise entry.exc
                break
            items.append(entry)
        return items

    def _to_writer(self, outputs: list[Result]) -> None:
        """Queue each result for the writer, its weight counted in the backlog first."""
        for output in outputs:
            size = self.stages.weigh(output) if self.stages.weigh else 0
            self.backlog.add(size)
            self.results.put((output, size))

    def _raise_if_writer_failed(self) -> None:
        """The writer's failure, raised in the calling thread."""
        if self.writer_failed:
            raise self.writer_failed[0]

    def finish_writing(self, writer: threading.Thread) -> None:
        """After the last compute: let the writer write the rest and finish, and raise what it raised."""
        self.results.put(_END)
        writer.join()
        self._raise_if_writer_failed()

    def fail(self, writer: threading.Thread) -> None:
        """After a failure in the calling thread: stop reading, drop what is not written, then abort."""
        self.stop.set()
        if self.stages.cancel:
            self.stages.cancel()
        _stop_writer(self.results, writer)
        if self.stages.abort:
            self.stages.abort()

    def end_reading(self, reader: threading.Thread) -> None:
        """Stop the reader, let one blocked on a full queue finish, and wait for its last word and its end."""
        self.stop.set()
        while not self.reader_done:
            self.reader_done = _is_last_word(self.loaded.get())
        reader.join()


def _is_last_word(entry: object) -> bool:
    """Whether `entry` is the reader's last put: the source's end, an early stop, or its exception."""
    return entry is _END or entry is _STOPPED or isinstance(entry, _Raised)


def run_stages(source: Iterable[Item], stages: Stages[Item, Result], *, on_computed: Callable[[int], None] | None = None) -> int:
    """Every item of `source` through compute and sink; returns how many were computed.

    `on_computed(n)` is called in the calling thread after each compute call with the count so far.
    The failure protocol is the module docstring's: whatever fails, every stage stops before this returns."""
    pipeline: _Pipeline[Item, Result] = _Pipeline(source, stages)
    reader = threading.Thread(target=pipeline.read, name="esr-reader", daemon=True)
    writer = threading.Thread(target=pipeline.write, name="esr-writer", daemon=True)
    reader.start()
    writer.start()
    try:
        computed = pipeline.compute_all(on_computed)
        pipeline.finish_writing(writer)
    except BaseException:  # an interrupt included
        pipeline.fail(writer)
        raise
    finally:
        pipeline.end_reading(reader)
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
