"""Training data: random HR crops, flips and 90-degree turns, LR made on the fly with MATLAB bicubic.

Every sample is a pure function of (seed, rank, global sample index), so a resumed run sees
exactly the batches an uninterrupted one would have seen, with any number of workers.
Decoded images are cached in memory once, before the workers fork, and shared with them.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..degrade import Degrader
from ..errors import TrainingDataError as TrainingDataError
from ..imagefile import read_rgb8
from ..imresize import imresize
from ..paths import find_lr, list_images

# Automatic data workers: at most this many per process; each holds prefetch_factor batches in shared memory.
MAX_AUTO_WORKERS = 16
# Where workers are not forked (macOS, Windows) each gets a pickled copy of the decoded images: auto
# stays at the old default there.
MAX_AUTO_WORKERS_UNFORKED = 2
# CPU milliseconds one worker (one torch thread) takes to make a sample, by degradation preset, for an HR
# crop of 208 px (LR patch 48 + context, x4); the cost follows the crop's area. Measured with
# benchmarks/degradation_speed.py and a quick timing of PatchDataset on this project's 2-core EPYC.
SAMPLE_MS = {"none": 2.4, "jpeg": 3.7, "light": 5.0, "realesrgan": 14.0}
SAMPLE_MS_CROP = 208
# Below this many steps/s of data, a GPU training one of these small networks waits for its batches: an
# assumption, not a measurement (they take milliseconds a step there), kept low so that the warning is sure.
ACCELERATOR_STEPS_PER_S = 10.0
MARGIN = 2  # LR pixels of context resized with each crop, then cut away: MATLAB's border handling stays out of the patch


@dataclass
class Source:
    """One training image: HR pixels and, for paired folders, its LR counterpart; with a teacher
    (distill.teacher), the teacher's output on that LR, the size of the HR."""

    hr: np.ndarray
    lr: np.ndarray | None = None
    teacher: np.ndarray | None = None


def load_sources(folders: list[str], scale: int) -> list[Source]:
    """Every image of every folder, decoded once. A folder with HR/ (and LR_bicubic/X{s}/) is paired."""
    sources: list[Source] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise TrainingDataError(f"{folder}: training data folder not found")
        if (folder / "HR").is_dir():
            for path in list_images(folder / "HR"):
                lr_path = find_lr(folder, path, scale)
                sources.append(Source(read_rgb8(path), read_rgb8(lr_path) if lr_path else None))
        else:
            sources.extend(Source(read_rgb8(p)) for p in list_images(folder))
    if not sources:
        raise TrainingDataError(f"no training images in {', '.join(folders)}")
    return sources


def bicubic_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-bicubic LR of float64 HR in [0, 1] (..., H, W), rounded to 8-bit levels as stored LR files are."""
    return (imresize(hr, scale=1 / scale) * 255).round().clamp(0, 255) / 255


def narrowing_patches(folders: list[str], scale: int, count: int = 8, size: int = 64) -> torch.Tensor:
    """A few LR patches (count x 3 x size x size, MATLAB bicubic from the top-left corner of evenly
    spaced training images) on which to judge which channels a narrowed network can lose."""
    paths = [p for folder in map(Path, folders) for p in list_images(folder / "HR" if (folder / "HR").is_dir() else folder)]
    chosen = [read_rgb8(paths[round(i * (len(paths) - 1) / max(1, count - 1))]) for i in range(min(count, len(paths)))]
    size = min([size, *(min(image.shape[:2]) // scale for image in chosen)]) if chosen else 0
    if size < 8:
        raise TrainingDataError(f"no training image in {', '.join(folders)} has {8 * scale} px to narrow a network with")
    crops = torch.stack([torch.from_numpy(im[: size * scale, : size * scale].copy()).permute(2, 0, 1) for im in chosen]).double() / 255
    return bicubic_lr(crops, scale).float()


def largest_lr_patch(sources: list[Source], scale: int) -> int:
    """The largest LR patch the biggest image still yields (0 if none)."""
    return max((min(s.hr.shape[:2]) // scale - 2 * MARGIN for s in sources), default=0)


class PatchDataset(Dataset):
    """Index i -> (lr, hr) float tensors in [0, 1], drawn with an RNG seeded by (seed, rank, i);
    (lr, hr, teacher) where the sources carry a teacher's output.

    Images smaller than one HR patch are left out (`left_out` counts them)."""

    def __init__(
        self, sources: list[Source], scale: int, lr_patch: int, seed: int = 0, rank: int = 0, degrader: Degrader | None = None
    ) -> None:
        self.sources, self.scale, self.lr_patch, self.seed, self.rank = sources, scale, lr_patch, seed, rank
        self.degrader = degrader  # random real-world degradations instead of plain bicubic (paired LR files unused)
        need = (lr_patch + 2 * MARGIN) * scale
        usable = [s for s in sources if min(s.hr.shape[:2]) >= need]
        if not usable:
            fits = largest_lr_patch(sources, scale)
            hint = f"use --lr-patch {fits} or less" if fits > 0 else f"they are too small for x{scale} training"
            raise TrainingDataError(
                f"all {len(sources)} training images are smaller than an HR patch of {need} px "
                f"(LR patch {lr_patch} + {MARGIN} px of context on each side, x{scale}); {hint}"
            )
        self.left_out = len(sources) - len(usable)
        self.sources = usable
        areas = np.array([s.hr.shape[0] * s.hr.shape[1] for s in usable], dtype=np.float64)
        self.weights = areas / areas.sum()  # big photos hold more distinct patches: sample them more

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, self.rank, index])
        source = self.sources[rng.choice(len(self.sources), p=self.weights)]
        s, p = self.scale, self.lr_patch
        if source.lr is not None and self.degrader is None:
            lh, lw = source.lr.shape[:2]
            y, x = rng.integers(0, lh - p + 1), rng.integers(0, lw - p + 1)
            big = [source.hr] if source.teacher is None else [source.hr, source.teacher]
            lr, *targets = (
                torch.from_numpy(image[y * k : (y + p) * k, x * k : (x + p) * k].copy()).permute(2, 0, 1).float() / 255
                for image, k in [(source.lr, 1), *((b, s) for b in big)]
            )
        else:
            big = (p + 2 * MARGIN) * s
            h, w = source.hr.shape[:2]
            y, x = rng.integers(0, h - big + 1), rng.integers(0, w - big + 1)
            crop = torch.from_numpy(source.hr[y : y + big, x : x + big].copy()).permute(2, 0, 1).to(torch.float64) / 255
            if self.degrader is not None:
                small = self.degrader(crop.float(), rng)  # already 8-bit values
            else:
                small = bicubic_lr(crop, s)
            lr = small[:, MARGIN:-MARGIN, MARGIN:-MARGIN].float()
            targets = [crop[:, MARGIN * s : -MARGIN * s, MARGIN * s : -MARGIN * s].float()]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        patches = [torch.rot90(t, turns, dims=(1, 2)) for t in (lr, *targets)]
        return tuple((t.flip(-1) if flip else t).contiguous() for t in patches)


class StepSampler(Sampler[int]):
    """Sample indices for steps [start, stop): batch b of step t holds indices t*batch .. t*batch+batch-1."""

    def __init__(self, start: int, stop: int, batch: int) -> None:
        self.start, self.stop, self.batch = start, stop, batch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start * self.batch, self.stop * self.batch))

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch


def _ignore_termination(_worker_id: int) -> None:
    """A SIGTERM sent to the whole process group is for the main process, which saves the run and
    then shuts its workers down; a worker dying first would turn that into a DataLoader error.

    When the main process stops while it is fetching a batch's shared memory, the worker's
    multiprocessing handshake thread sees the connection reset and would print a traceback through
    sys.excepthook: that is the expected end of the worker, not an error for the user."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    default_hook = sys.excepthook

    def quiet_on_hang_up(kind: type[BaseException], value: BaseException, tb: object) -> None:
        if not issubclass(kind, (ConnectionResetError, BrokenPipeError, EOFError)):
            default_hook(kind, value, tb)

    sys.excepthook = quiet_on_hang_up


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_workers(setting: int | str, device: torch.device, local_world: int = 1, *, degraded: bool = False) -> int:
    """data.workers as a number: explicit values as they are; "auto" the cores the training process leaves free.

    On the CPU the training process's torch threads already use their cores, so auto is what they leave
    over, 0 when nothing is: plain bicubic data (~2.4 ms a sample) is ~1% of a step there, and 0, 1 or 2
    workers stepped equally fast on 2 cores. A degradation preset costs several times more and, made in
    the training process, adds to every step: one worker overlaps it with the step (1.2-1.8x the steps/s
    of none with realesrgan on 2 cores), so auto keeps at least one then. A GPU needs one core to drive
    it and the rest can make data. Processes of one machine (torchrun) share its cores.
    benchmarks/train_step_overhead.py measures it."""
    if setting != "auto":
        return int(setting)
    share = max(1, usable_cores() // max(1, local_world))
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    most = MAX_AUTO_WORKERS if method == "fork" else MAX_AUTO_WORKERS_UNFORKED
    if device.type == "cpu":
        return min(most, max(int(degraded), share - torch.get_num_threads()))
    return min(most, max(1, share - 1))


def starvation_warning(preset: str, workers: int, batch: int, lr_patch: int, scale: int, device: torch.device) -> str | None:
    """A one-line warning when the degradations cannot keep a GPU busy, from SAMPLE_MS; None when they can.

    Only for accelerators: on the CPU the data and the network share the same cores, so more workers do
    not make a step faster."""
    if device.type == "cpu" or preset not in SAMPLE_MS or preset == "none":
        return None
    crop = (lr_patch + 2 * MARGIN) * scale
    sample_ms = SAMPLE_MS[preset] * (crop / SAMPLE_MS_CROP) ** 2
    samples_s = max(1, workers) * 1000 / sample_ms
    steps_s = samples_s / batch
    if steps_s >= ACCELERATOR_STEPS_PER_S:
        return None
    makers = f"{workers} data worker(s)" if workers else "the training process itself (data.workers = 0)"
    return (
        f"degradation preset {preset} costs ~{sample_ms:.0f} CPU-ms per {crop} px sample: {makers} make ~{samples_s:.0f} samples/s, "
        f"{steps_s:.1f} steps/s at batch {batch}, likely fewer than {device} trains; give it more cores (--workers, at least "
        f"{math.ceil(ACCELERATOR_STEPS_PER_S * batch * sample_ms / 1000)}) or a lighter preset"
    )


def make_loader(dataset: PatchDataset, start: int, stop: int, batch: int, workers: int, *, pin_memory: bool = False) -> DataLoader:
    """Batches for steps [start, stop). pin_memory (CUDA only) puts them in page-locked memory, so that
    the copy to the GPU can run asynchronously (non_blocking) while the host queues the next kernels."""
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=StepSampler(start, stop, batch),
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        drop_last=True,
        worker_init_fn=_ignore_termination if workers else None,
        pin_memory=pin_memory,
    )
