"""What a run keeps on disk for --resume: the parts folder next to the output, the manifest of its finished
segments (keyed on the input's content and the settings), and `SegmentWork`, the description of the segments
to encode that a Ray worker receives as well.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import VideoError
from .encode import EncodeSettings
from .probe import VideoInfo


def fingerprint(path: Path) -> str:
    """A content key of the input: its size and its first and last 16 MiB (fast for huge files)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(16 << 20))
        if size > 32 << 20:
            f.seek(-(16 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()


@dataclass
class Manifest:
    """The finished segments of a run, by index: segment i holds frames [i * segment_frames, ...).

    Segments may finish in any order (Ray workers) and a run may resume another's, local or not."""

    key: str
    segment_frames: int
    segments: list[dict] = field(default_factory=list)  # {"index": i, "file": ..., "frames": n}

    @property
    def frames_done(self) -> int:
        return sum(s["frames"] for s in self.segments)

    @property
    def done(self) -> set[int]:
        return {s["index"] for s in self.segments}

    def record(self, folder: Path, index: int, file: str, frames: int) -> None:
        self.segments = [s for s in self.segments if s["index"] != index] + [{"index": index, "file": file, "frames": frames}]
        self.segments.sort(key=lambda s: s["index"])
        self.save(folder)

    def save(self, folder: Path) -> None:
        with atomic_write(folder / "manifest.json") as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The manifest of an interrupted run; None when there is none, an error when it is damaged."""
        path = folder / "manifest.json"
        if not path.is_file():
            return None
        try:
            manifest = cls(**json.loads(path.read_text()))
            for position, s in enumerate(manifest.segments):
                s.setdefault("index", position)  # manifests written before segments had indices
            valid = (
                isinstance(manifest.key, str)
                and isinstance(manifest.segment_frames, int)
                and manifest.segment_frames > 0
                and isinstance(manifest.segments, list)
                and all(
                    isinstance(s, dict)
                    and isinstance(s.get("frames"), int)
                    and s["frames"] > 0
                    and isinstance(s["index"], int)
                    and (folder / str(s.get("file"))).is_file()
                    for s in manifest.segments
                )
            )
        except (OSError, ValueError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise VideoError(f"{folder}: the interrupted run's parts are damaged; pass --overwrite to start over")
        return manifest


def parts_dir(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.esr-parts"


@dataclass
class SegmentWork:
    """Everything encoding segments of one video takes, in or out of this process (Ray workers)."""

    src: Path
    dst: Path
    folder: Path
    info: VideoInfo
    encode: EncodeSettings
    size: tuple[int, int]
    raw_fmt: str
    rate: Fraction
    segment_frames: int
    hwaccel: str = "none"  # as VideoJob's; auto is settled by each process that decodes (a Ray worker on its own machine)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.raw_fmt == "rgb48le" else np.dtype(np.uint8)

    @property
    def segments(self) -> int:
        return -(-self.info.frames // self.segment_frames)

    def frames_in(self, index: int) -> int:
        return max(0, min(self.segment_frames, self.info.frames - index * self.segment_frames))

    def seek(self, frame: int) -> tuple[Fraction | None, int]:
        """Where to start decoding to reach `frame`, and how many frames to drop first: just before the
        keyframe at or before it, so decoding starts clean (from the start where timestamps cannot be
        trusted to seek with, as in AVI)."""
        keys = [k for k in self.info.keyframes if k <= frame]
        if not self.info.seekable or not keys or keys[-1] == 0:
            return None, frame
        key, times = keys[-1], self.info.frame_times
        return (times[key - 1] + times[key]) / 2 - self.info.origin, frame - key  # halfway from the frame before


def missing_runs(work: SegmentWork, manifest: Manifest) -> list[tuple[int, int]]:
    """The segments still to encode, as [first, stop) runs of consecutive indices."""
    runs: list[tuple[int, int]] = []
    for index in (i for i in range(work.segments) if i not in manifest.done):
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def resume_hint(folder: Path, manifest: Manifest) -> str:
    """What a failed run that keeps its finished segments says about them."""
    return f"{manifest.frames_done} finished frames are kept in {folder}: run the same command with --resume to continue"
