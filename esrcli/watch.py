"""Watching folders: upscale image files as they arrive, each version once, with the model opened once.

`esr upscale DIR -o OUT --watch` keeps one engine run going (batch.run_loaded: the model opened once,
the next file decoded while one is upscaled and the last one written) whose source never ends: a
`Watcher` hands out files as they become ready, and Ctrl-C or SIGTERM ends it like any batch.

- **Ready**: a file is handed out once its size and modification time have stayed the same for
  `settle` seconds, as esr observed them; then it must also decode. One that does not is still being
  written by something that paused (a slow network copy), so it waits again; only a version that stays
  undecodable for `grace` seconds is reported as failed (a version that changes later is tried again).
- **Once**: a file is identified by its path, size and modification time (a *version*). Each version is
  handed out once. Whether a new version of a file already upscaled replaces its output is the usual
  `--skip-existing` (no: reported as skipped, the default) or `--overwrite` (yes) choice, and an output
  that exists from before is skipped the same way, so a restarted watch redoes nothing.
- **Where outputs go**: `batch.plan_files`, exactly as a batch of that folder would; a file whose output
  another file of this watch already claimed (`a.jpg` and `a.png` with `--format png`) fails with the
  batch's message instead of replacing it. Outputs must lie outside what is watched, or they would
  come back as inputs.
- **Which files**: those a batch of the folder would take (`paths.is_image`), but not hidden ones (a
  leading dot in their name or a folder's, how rsync and downloaders name a file being written).
- **Events or polling**: with watchdog installed (`pip install "esrcli[watch]"`), the operating system
  says what changed (inotify, FSEvents, ReadDirectoryChangesW, kqueue): no busy rescans of large
  folders, and a new file is seen at once. Without it, or with `poll` (network mounts, where those
  events do not arrive), the folders are listed every `poll` seconds. The settle rule is the same.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import Batch, Outcome, Settings, Task, clash_message, load, plan_files, run_loaded
from .errors import WatchError
from .imagefile import Picture
from .jobs import FilesRun
from .paths import is_image, list_images
from .scaling import Pipeline

SETTLE = 1.0  # seconds a file must stay unchanged before it is read
POLL = 1.0  # seconds between listings when polling without --poll (watchdog missing)
GRACE = 5  # settle times a version may stay undecodable before it is reported as failed

Key = tuple[int, int]  # (size, mtime_ns): one version of a file


def check_folders(inputs: list[str], out: Path | None, recursive: bool) -> list[Path]:
    """The folders to watch, refused in one line where the watch could not work: inputs that are not
    folders, no -o folder, or outputs that would land in what is watched (and come back as inputs)."""
    folders = [Path(raw) for raw in inputs]
    for folder in folders:
        if not folder.is_dir():
            raise WatchError(f"{folder}: --watch watches folders, and this is not one")
    if out is None:
        raise WatchError("--watch needs -o FOLDER: outputs beside the inputs would be taken as new inputs")
    if out.exists() and not out.is_dir():
        raise WatchError(f"{out}: --watch writes into a folder, and this is a file")
    target = out.resolve()
    for folder in folders:
        here = folder.resolve()
        if target == here or (recursive and (target.is_relative_to(here) or here.is_relative_to(target))):
            raise WatchError(f"{out}: outputs would land in the watched folder {folder} and be taken as new inputs; pass another -o")
    return folders


def describe_observer(observer: Any) -> str:
    """What a watchdog observer listens with, in the operating system's words."""
    name = type(observer).__name__
    known = {"InotifyObserver": "inotify", "FSEventsObserver": "FSEvents", "WindowsApiObserver": "ReadDirectoryChangesW"}
    return f"{known.get(name, name.removesuffix('Observer') or name)} events (watchdog)"


class Watcher:
    """Image files under `folders` as they become ready (see the module's docstring), each version once.

    `next_ready()` blocks (without spinning: on file events, or until the next listing or settle time)
    and returns (file, the folder it is under, its version), or None once `stop()` was called. All state
    but the events' inbox is the consumer's alone. Use as a context manager, or `start()` and `close()`."""

    def __init__(self, folders: list[Path], *, recursive: bool = False, settle: float = SETTLE, poll: float | None = None) -> None:
        self.folders = folders
        self.recursive = recursive
        self.settle = settle
        self.poll = poll  # None: events where watchdog is installed
        self.description = ""
        self._absolute = [(Path(os.path.abspath(f)), f) for f in folders]
        self._pending: dict[Path, tuple[Path, Key, float]] = {}  # file -> (its folder, version, first seen)
        self._handed: dict[Path, Key] = {}
        self._inbox: set[Path] = set()  # absolute paths that events named, for the consumer to look at
        self._rescan = True
        self._stopped = False
        self._changed = threading.Condition()
        self._observer: Any = None
        self._next_listing = 0.0

    # --- starting and stopping ---

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Watcher:
        """Listen for events before the first listing, so that no file slips between the two."""
        if self.poll is None:
            try:
                self._observer = self._observe_events()
            except ImportError:
                self.poll = POLL
                self.description = f'polling every {POLL:g} s (pip install "esrcli[watch]" for file events)'
            except OSError as exc:  # inotify's watch limit (fs.inotify.max_user_watches), an unsupported mount
                self.poll = POLL
                self.description = f"polling every {POLL:g} s (file events failed: {exc.strerror or exc})"
        else:
            self.description = f"polling every {self.poll:g} s"
        return self

    def _observe_events(self) -> Any:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                watcher._event(event)

        observer = Observer()
        for absolute, _ in self._absolute:
            observer.schedule(Handler(), str(absolute), recursive=self.recursive)
        observer.daemon = True
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        self.description = describe_observer(observer)
        return observer

    def stop(self) -> None:
        """Make `next_ready` return None (from any thread)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def close(self) -> None:
        self.stop()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    # --- what happened ---

    def _event(self, event: Any) -> None:
        """In watchdog's thread: note the paths an event names and wake the consumer."""
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):  # a file being read, by esr itself too: nothing changed
            return
        with self._changed:
            if kind == "events_lost" or (event.is_directory and kind != "modified"):  # a folder moved in or away
                self._rescan = True
            else:
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        self._inbox.add(Path(os.fsdecode(raw)))
            self._changed.notify_all()

    def _locate(self, absolute: Path) -> tuple[Path, Path] | None:
        """(the file as named under its watched folder, that folder) for a path an event named, if wanted."""
        for root_absolute, root in self._absolute:
            if absolute.is_relative_to(root_absolute):
                relative = absolute.relative_to(root_absolute)
                if self._wanted(relative):
                    return root / relative, root
        return None

    def _wanted(self, relative: Path) -> bool:
        parts = relative.parts
        return bool(parts) and (self.recursive or len(parts) == 1) and not any(p.startswith(".") for p in parts) and is_image(relative)

    def _look(self, path: Path, root: Path, now: float) -> None:
        """Note the version of `path` now on disk: a new one starts settling, a handed-out one is done."""
        key = _version(path)
        if key is None or self._handed.get(path) == key:
            self._pending.pop(path, None)
        elif (known := self._pending.get(path)) is None or known[1] != key:
            self._pending[path] = (root, key, now)

    def _list(self, now: float) -> None:
        """Every wanted file of the folders looked at; a pending one that is gone is forgotten."""
        present: set[Path] = set()
        for _, root in self._absolute:
            if not root.is_dir():
                raise WatchError(f"{root}: the watched folder is gone")
            for path in list_images(root, self.recursive):
                if self._wanted(path.relative_to(root)):
                    present.add(path)
                    self._look(path, root, now)
        for path in [p for p in self._pending if p not in present]:
            del self._pending[path]

    # --- handing files out ---

    def next_ready(self) -> tuple[Path, Path, Key] | None:
        """The next file whose version has settled (the longest settled first), or None once stopped."""
        while True:
            with self._changed:
                if self._stopped:
                    return None
                inbox, self._inbox = self._inbox, set()
                rescan, self._rescan = self._rescan, False
            now = time.monotonic()
            if self.poll is not None and now >= self._next_listing:
                rescan, self._next_listing = True, now + self.poll
            if rescan:
                self._list(now)
            for absolute in inbox:
                if (found := self._locate(absolute)) is not None:
                    self._look(*found, now)
            if self._observer is not None and not self._observer.is_alive():
                gone = [root for _, root in self._absolute if not root.is_dir()]
                raise WatchError(f"{gone[0]}: the watched folder is gone" if gone else "file events stopped arriving; use --poll")
            settled = sorted((since, path) for path, (_, _, since) in self._pending.items() if now - since >= self.settle)
            for _, path in settled:
                root, key, _ = self._pending.pop(path)
                if _version(path) != key:  # changed since it was last looked at (an event may be on its way)
                    self._look(path, root, now)
                    continue
                self._handed[path] = key
                return path, root, key
            waits = [since + self.settle - now for _, _, since in self._pending.values()]
            if self.poll is not None:
                waits.append(self._next_listing - now)
            with self._changed:
                if not (self._stopped or self._inbox or self._rescan):
                    self._changed.wait(max(0.0, min(waits)) + 0.001 if waits else None)

    def again(self, path: Path, root: Path) -> None:
        """Hand `path` out once more after it settles again (it did not decode yet)."""
        self._handed.pop(path, None)
        self._look(path, root, time.monotonic())


def _version(path: Path) -> Key | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


@dataclass
class WatchRun(FilesRun):
    """What a watch did: a FilesRun whose batch grew as files arrived, and how it listened."""

    watched: list[Path] = field(default_factory=list)
    listening: str = ""
    error: str | None = None  # what ended it other than an interrupt (a watched folder removed)

    @property
    def unfinished(self) -> int:
        """Files handed out but neither written nor reported when the watch ended: the next run does them."""
        return len(self.batch.tasks) + len(self.batch.failures) - len(self.outcomes)

    def summary(self, *, model: str, pipeline: Pipeline) -> dict:
        return {
            **super().summary(model=model, pipeline=pipeline),
            "watch": {"folders": [str(f) for f in self.watched], "listening": self.listening, "unfinished": self.unfinished},
            "error": self.error,
        }


def upscale_watched(
    watcher: Watcher,
    pipeline: Pipeline,
    settings: Settings,
    *,
    out: Path,
    recursive: bool,
    suffix: str,
    fmt: str,
    grace: float | None = None,
    on_start: Callable[[Task, int], None] | None = None,
    on_tile: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> WatchRun:
    """Every file the (started) watcher hands out, through one engine run, until an interrupt (recorded, for
    the caller to report and re-raise as a batch's) or a WatchError (recorded in `error`)."""
    grace = GRACE * watcher.settle if grace is None else grace
    started = time.perf_counter()
    run = WatchRun(Batch(), [], 0.0, watched=list(watcher.folders), listening=watcher.description)
    claimed: dict[Path, Path] = {}  # output -> the input that writes it
    undecodable: dict[tuple[Path, Key], float] = {}  # a version that did not decode -> when it first failed

    def arrivals() -> Iterator[tuple[Task | None, float, Picture | Outcome]]:
        while (ready := watcher.next_ready()) is not None:
            path, root, key = ready
            start = time.perf_counter()
            planned = plan_files([(path, root)], out=out, recursive=recursive, suffix=suffix, fmt=fmt)
            if planned.failures:
                failure = planned.failures[0]
            else:
                task = planned.tasks[0]
                owner = claimed.setdefault(task.output.resolve(), path)
                if owner == path:
                    picture = load(task, settings)
                    if isinstance(picture, Outcome) and picture.status == "failed":
                        first = undecodable.setdefault((path, key), time.monotonic())
                        if time.monotonic() - first < grace:  # perhaps still being written: wait for it again
                            watcher.again(path, root)
                            continue
                    undecodable.pop((path, key), None)
                    run.batch.tasks.append(task)
                    yield task, start, picture
                    continue
                failure = Outcome(path, task.output, "failed", clash_message(task.output, [owner, path], recursive))
            run.batch.failures.append(failure)
            yield None, start, failure

    def finished(outcome: Outcome) -> None:
        run.outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)

    try:
        run_loaded(arrivals(), pipeline, settings, on_start=on_start, on_tile=on_tile, on_outcome=finished, cancel=watcher.stop)
    except KeyboardInterrupt as exc:  # the file being written was finished; nothing half-written remains
        run.interrupted = exc
    except WatchError as exc:
        run.error = str(exc)
    run.seconds = time.perf_counter() - started
    return run
