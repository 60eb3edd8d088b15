"""Training data: random HR crops, flips and 90-degree turns, LR made on the fly with MATLAB bicubic.

Every sample is a pure function of (seed, rank, global sample index), so a resumed run sees
exactly the batches an uninterrupted one would have seen, with any number of workers.
Decoded images are cached in memory once, before the workers fork, and shared with them.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..degrade import Degrader
from ..errors import EsrError
from ..imagefile import read_rgb8
from ..imresize import imresize
from ..paths import find_lr, list_images

MARGIN = 2  # LR pixels of context resized with each crop, then cut away: MATLAB's border handling stays out of the patch


class TrainingDataError(EsrError, ValueError):
    """Training data that cannot be used: a missing folder, no images, none as large as a patch."""


@dataclass
class Source:
    """One training image: HR pixels and, for paired folders, its LR counterpart."""

    hr: np.ndarray
    lr: np.ndarray | None = None


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


def largest_lr_patch(sources: list[Source], scale: int) -> int:
    """The largest LR patch the biggest image still yields (0 if none)."""
    return max((min(s.hr.shape[:2]) // scale - 2 * MARGIN for s in sources), default=0)


class PatchDataset(Dataset):
    """Index i -> (lr, hr) float tensors in [0, 1], drawn with an RNG seeded by (seed, rank, i).

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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, index])
        source = self.sources[rng.choice(len(self.sources), p=self.weights)]
        s, p = self.scale, self.lr_patch
        if source.lr is not None and self.degrader is None:
            lh, lw = source.lr.shape[:2]
            y, x = rng.integers(0, lh - p + 1), rng.integers(0, lw - p + 1)
            lr = torch.from_numpy(source.lr[y : y + p, x : x + p].copy()).permute(2, 0, 1).float() / 255
            hr = torch.from_numpy(source.hr[y * s : (y + p) * s, x * s : (x + p) * s].copy()).permute(2, 0, 1).float() / 255
        else:
            big = (p + 2 * MARGIN) * s
            h, w = source.hr.shape[:2]
            y, x = rng.integers(0, h - big + 1), rng.integers(0, w - big + 1)
            crop = torch.from_numpy(source.hr[y : y + big, x : x + big].copy()).permute(2, 0, 1).to(torch.float64) / 255
            if self.degrader is not None:
                small = self.degrader(crop.float(), rng)  # already 8-bit values
            else:
                small = (imresize(crop, scale=1 / s) * 255).round().clamp(0, 255).float() / 255  # as stored LR files are
            lr = small[:, MARGIN:-MARGIN, MARGIN:-MARGIN].float()
            hr = crop[:, MARGIN * s : -MARGIN * s, MARGIN * s : -MARGIN * s].float()
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        lr, hr = (torch.rot90(t, turns, dims=(1, 2)) for t in (lr, hr))
        if flip:
            lr, hr = lr.flip(-1), hr.flip(-1)
        return lr.contiguous(), hr.contiguous()


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


def make_loader(dataset: PatchDataset, start: int, stop: int, batch: int, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=StepSampler(start, stop, batch),
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        drop_last=True,
        worker_init_fn=_ignore_termination if workers else None,
    )
