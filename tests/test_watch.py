"""`esr upscale DIR -o OUT --watch`: files picked up as they arrive (once each has stopped growing and
decodes), each version once, existing files first, events or polling, and a clean end on Ctrl-C or SIGTERM.

The end-to-end tests run esr as its own process in its own process group, which is killed whatever
the test does; pictures are 32x32 and the model the embedded default, so each run takes seconds."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from esrcli.errors import WatchError
from esrcli.watch import Watcher, check_folders

SETTLE = 0.4  # seconds: short, so that the tests are quick; the pieces below come slower than this


def png_bytes(seed: int) -> bytes:
    """A 32x32 noise PNG (noise: it does not compress, so it can be written in several real pieces)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def copy_slowly(data: bytes, target: Path, pieces: int = 4, pause: float = 2 * SETTLE) -> None:
    """Write `data` as a slow copy does: in pieces, each flushed, with pauses longer than the settle time."""
    step = -(-len(data) // pieces)
    with open(target, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            if start + step < len(data):
                time.sleep(pause)


class Esr:
    """A running `esr upscale --watch`, its stderr collected line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esrcli", "upscale", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, what: str, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if self.proc.poll() is not None:
                self.reader.join(5)
                raise AssertionError(f"esr ended ({self.proc.returncode}) before {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.stderr}")
            time.sleep(0.02)

    def said(self, pattern: str) -> list[str]:
        return [line for line in list(self.lines) if re.search(pattern, line)]

    def stop(self, signum: int) -> tuple[int, str]:
        """Send `signum` to esr's group; its exit code and stdout once it has ended."""
        os.killpg(self.proc.pid, signum)
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        self.reader.join(10)
        return self.proc.returncode, out


@contextmanager
def watching(*args: str) -> Iterator[Esr]:
    """esr watching; its process group is killed afterwards, even when an assertion failed."""
    esr = Esr(*args)
    try:
        if "--json" not in args:  # the one line a watch says before its first file
            esr.wait_for(lambda: esr.said(r"^watching .*Ctrl-C stops"), "the watch to start")
        yield esr
    finally:
        try:
            os.killpg(esr.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        esr.proc.wait(timeout=30)
        for stream in (esr.proc.stdout, esr.proc.stderr):
            stream.close()


def valid_output(path: Path) -> None:
    with Image.open(path) as image:
        image.load()  # the whole file decodes
        assert image.size == (128, 128) and image.mode == "RGB"


def no_partials(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*")], "a hidden partial file was left"


def test_events_existing_then_slow_copies_once_then_ctrl_c_prints_the_summary(tmp_path):
    """With file events (watchdog where installed): the file present at start first; a slow copy and a
    rename picked up once each, once complete; a broken file reported while watching goes on; Ctrl-C: 130."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "first.png").write_bytes(png_bytes(1))
    (inbox / ".hidden.png").write_bytes(png_bytes(2))  # how rsync names a file it is writing: ignored
    with watching(str(inbox), "-o", str(out), "--watch", "--settle", str(SETTLE)) as esr:
        try:
            import watchdog  # noqa: F401

            assert esr.said(r"^watching .* with inotify events \(watchdog\)"), esr.stderr
        except ImportError:
            assert esr.said(r"^watching .* with polling every 1 s"), esr.stderr
        esr.wait_for(lambda: (out / "first_x4.png").exists(), "the file present at start")
        copy_slowly(png_bytes(3), inbox / "slow.png")
        (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 50)
        staged = tmp_path / "staged.part"
        staged.write_bytes(png_bytes(4))
        staged.rename(inbox / "moved.png")  # how a download or an editor's save arrives: whole, at once
        esr.wait_for(lambda: (out / "slow_x4.png").exists() and (out / "moved_x4.png").exists(), "the slow copy and the renamed file")
        esr.wait_for(lambda: esr.said(r"failed:.*broken\.png"), "the broken file to be reported")
        time.sleep(4 * SETTLE)  # time enough to pick anything up twice
        assert len(esr.said(r"^upscaled .*slow\.png")) == 1 and len(esr.said(r"^upscaled .*moved\.png")) == 1, esr.stderr
        assert esr.said(r"^upscaled .*first\.png .*\(1 upscaled, 0 skipped, 0 failed so far\)"), esr.stderr
        code, _ = esr.stop(signal.SIGINT)
    assert code == 130, esr.stderr
    assert "Traceback" not in esr.stderr
    assert esr.said(r"^stopped watching after [\d.]+ s: 3 upscaled, 0 skipped, 1 failed"), esr.stderr
    for name in ("first", "slow", "moved"):
        valid_output(out / f"{name}_x4.png")
    assert sorted(p.name for p in out.iterdir()) == ["first_x4.png", "moved_x4.png", "slow_x4.png"]
    no_partials(out)


def test_polling_skips_what_was_done_before_and_sigterm_prints_the_json_summary(tmp_path):
    """--poll: an output from before is not redone, a slow copy is done once, a changed version of a done
    file is skipped (--skip-existing); SIGTERM ends with the --json document and 143, as any interrupt."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    (inbox / "old.png").write_bytes(png_bytes(5))
    (out / "old_x4.png").write_bytes(b"from before")  # its output exists: skipped, left alone
    (inbox / "present.png").write_bytes(png_bytes(6))
    with watching(str(inbox), "-o", str(out), "--watch", "--poll", "0.1", "--settle", str(SETTLE), "--json") as esr:
        esr.wait_for(lambda: (out / "present_x4.png").exists(), "the file present at start")
        copy_slowly(png_bytes(7), inbox / "slow.png", pause=3 * SETTLE)
        esr.wait_for(lambda: (out / "slow_x4.png").exists(), "the slow copy")
        (inbox / "present.png").write_bytes(png_bytes(8))  # a new version of a done file
        time.sleep(5 * SETTLE)
        code, stdout = esr.stop(signal.SIGTERM)
    assert code == 143, esr.stderr
    assert "Traceback" not in esr.stderr and not esr.stderr.strip(), esr.stderr  # --json: nothing but the document
    summary = json.loads(stdout)
    assert [Path(o["input"]).name for o in summary["outputs"]] == ["present.png", "slow.png"]
    assert sorted(Path(o["input"]).name for o in summary["skipped"]) == ["old.png", "present.png"]
    assert summary["failures"] == [] and summary["interrupted"] is True and summary["error"] is None
    assert summary["watch"]["listening"] == "polling every 0.1 s" and summary["watch"]["unfinished"] == 0
    assert (out / "old_x4.png").read_bytes() == b"from before"
    valid_output(out / "slow_x4.png")
    no_partials(out)


def test_watch_refuses_what_it_cannot_watch_before_opening_the_model(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.png").write_bytes(png_bytes(9))
    cases = [
        ([str(inbox), "--watch"], "--watch needs -o FOLDER"),
        ([str(inbox), "-o", str(inbox), "--watch"], "outputs would land in the watched folder"),
        ([str(tmp_path), "-o", str(inbox / "big"), "--watch", "-r"], "outputs would land in the watched folder"),
        ([str(inbox / "a.png"), "-o", str(tmp_path / "out"), "--watch"], "--watch watches folders"),
        ([str(inbox), "-o", str(tmp_path / "out"), "--poll", "1"], "--poll only applies with --watch"),
        ([str(inbox), "-o", str(tmp_path / "out"), "--watch", "--ray", "local"], "does not take --ray"),
    ]
    for args, message in cases:
        result = run_cli("upscale", *args)
        assert result.exit_code in (1, 2) and message in result.output, (args, result.output)
    assert not (tmp_path / "out").exists() and not (inbox / "big").exists()
    with pytest.raises(WatchError, match="watched folder"):
        check_folders([str(tmp_path)], inbox, recursive=True)
    assert check_folders([str(inbox)], inbox / "big", recursive=False) == [inbox]  # not watched without -r


def next_within(watcher: Watcher, seconds: float):
    """What next_ready hands out within `seconds`, or None (the watcher is then stopped)."""
    got: list = []
    thread = threading.Thread(target=lambda: got.append(watcher.next_ready()))
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        watcher.stop()
        thread.join(10)
        return None
    return got[0]


@pytest.mark.parametrize("poll", [0.05, None], ids=["polling", "events"])
def test_each_version_is_handed_out_once_and_only_wanted_files(tmp_path, poll):
    inbox = tmp_path / "in"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "a.png").write_bytes(png_bytes(10))
    (inbox / "notes.txt").write_text("not an image")
    (inbox / "sub" / "deep.png").write_bytes(png_bytes(11))  # not watched without recursive
    with Watcher([inbox], settle=0.1, poll=poll) as watcher:
        path, root, key = next_within(watcher, 10)
        assert (path, root, key[0]) == (inbox / "a.png", inbox, (inbox / "a.png").stat().st_size)
        (inbox / ".b.png").write_bytes(png_bytes(12))
        os.utime(inbox / "a.png", ns=(time.time_ns(), time.time_ns() + 10**9))  # a new version
        assert next_within(watcher, 10)[0] == inbox / "a.png"
        assert next_within(watcher, 1.0) is None  # nothing else: the same version is not handed out twice
