"""The training loop shared by `esr train` and `esr finetune-lora`.

A run lives in one folder: config.toml, checkpoint.pt (model, EMA, optimizer, scheduler,
scaler and RNG state, written atomically), metrics.jsonl, and tb/ when tensorboard is
installed. Under torchrun every rank trains on its own samples through
DistributedDataParallel; rank 0 alone validates, logs and checkpoints.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..bench import evaluate_set
from ..degrade import Degrader
from ..device import native_bf16, warn_if_emulated_bf16
from ..errors import EsrWarning
from ..runconfig import CHECKPOINT, CONFIG, METRICS, TrainConfig, TrainingError
from ..runs import read_checkpoint, student_depth
from .checkpoint import checkpoint_state, restore, save_atomic, truncate_metrics
from .data import MARGIN, PatchDataset, Source, load_sources, make_loader, narrowing_patches, resolve_workers, starvation_warning
from .losses import build_loss, has_terms, trim
from .network import AtDepth, build_or_explain, warm_start
from .network import build_network as build_network  # where callers and tests have always found it
from .ranks import digest, place

Event = dict[str, Any]
Terms = dict[str, torch.Tensor | float]  # a step's loss terms, as the loss function or hook left them
EmaTensors = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]  # EMA and model: parameters, buffers


def diverged(step: int, loss: float) -> TrainingError:
    """The error that stops a run whose loss left the finite numbers (`step` as metrics.jsonl numbers it)."""
    return TrainingError(f'step {step}: the loss is {loss}; lower optim.lr or use run.amp = "none"')


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of the base learning rate at `step`: linear warm-up, then cosine or multistep."""
    o = cfg.optim
    if o.warmup and step < o.warmup:
        return (step + 1) / o.warmup
    if o.schedule == "cosine":
        span = max(1, cfg.run.steps - o.warmup)
        progress = min(1.0, (step - o.warmup) / span)
        floor = o.min_lr / o.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if o.schedule == "multistep":
        return o.gamma ** sum(step >= m for m in o.milestones)
    raise TrainingError(f"unknown schedule '{o.schedule}' (cosine or multistep)")


def ema_tensors(ema: nn.Module, network: nn.Module) -> EmaTensors:
    """The tensors Trainer._update_ema works on, listed once (loading a checkpoint copies into them):
    the EMA's and the network's trained parameters, then their buffers."""
    pairs = [(e, p.detach()) for e, p in zip(ema.parameters(), network.parameters()) if p.requires_grad]
    buffers = list(zip(ema.buffers(), network.buffers()))
    return [e for e, _ in pairs], [p for _, p in pairs], [e for e, _ in buffers], [b for _, b in buffers]


class Trainer:
    """One run: builds everything from a config, trains, validates, checkpoints and resumes."""

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, *, resume: bool = False, network: nn.Module | None = None, loss_hook: Callable | None = None
    ) -> None:
        self.cfg, self.run_dir = cfg.validate(), Path(run_dir)
        self.device, self.rank, self.world = place(cfg)
        self.main = self.rank == 0
        self.amp = self._amp_dtype()
        self.workers = self._data_workers()
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
        self.left_at_init: list[str] = []  # with model.init: the tensors the source did not fit
        self.narrowed_init = ""  # with model.init wider than the network: how it was narrowed
        self.network = self._network(network, resume)
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.ema = copy.deepcopy(self.network).eval().requires_grad_(False) if cfg.optim.ema else None
        self._ema_pairs: EmaTensors | None = ema_tensors(self.ema, self.network) if self.ema is not None else None
        self.model: nn.Module = self._distributed(self.network)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(cfg, step))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self._check_border()
        self.loss_fn = build_loss(cfg.loss)
        # Extra terms: (lr, sr, hr) -> (loss, parts), sr and hr without the border.
        self.loss_hook = loss_hook if loss_hook is not None else self._recipe_hook()
        self.teacher: nn.Module | None = self._teacher()  # distill.teacher: labels the training images when fit starts
        self._check_some_loss(given_hook=loss_hook)
        self.step = 0
        if resume:
            self.load()
        self.tb = self._tensorboard()

    # --- setup ----------------------------------------------------------------------------

    def _data_workers(self) -> int:
        """data.workers resolved for this device and node; rank 0 warns when they look too few to feed it."""
        cfg = self.cfg
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        workers = resolve_workers(cfg.data.workers, self.device, local_world, degraded=cfg.degradation.enabled)
        starving = starvation_warning(cfg.degradation.preset, workers, cfg.data.batch, cfg.data.lr_patch, cfg.model.scale, self.device)
        if starving and self.main:
            warnings.warn(starving, EsrWarning, stacklevel=3)  # at the caller of Trainer()
        return workers

    def _network(self, given: nn.Module | None, resume: bool) -> nn.Module:
        """The network to train, on the device: `given`, or built from the config and, on a fresh run with
        model.init, warm-started (noting in left_at_init and narrowed_init what did not carry over)."""
        cfg = self.cfg
        network = given if given is not None else build_or_explain(cfg)
        if cfg.model.init and given is None and not resume and not cfg.lora.student:
            self.left_at_init, self.narrowed_init = warm_start(
                network, cfg.model.init, lambda: narrowing_patches(cfg.data.train, cfg.model.scale)
            )
        network = network.to(self.device)
        if cfg.lora.student:  # the data follows the student's scale
            cfg.model.arch, cfg.model.scale = network.arch, network.scale
        if cfg.run.channels_last and self.device.type != "mps":
            network = network.to(memory_format=torch.channels_last)
        return network

    def _distributed(self, network: nn.Module) -> nn.Module:
        """What the steps call: `network` itself, or under torchrun its DistributedDataParallel wrapper."""
        if self.world == 1:
            return network
        unused = self.cfg.recipe.name == "espan-sd"
        # The buffers are constants (SPAN's mean, EDBB's masks): no running statistics to broadcast.
        return nn.parallel.DistributedDataParallel(network, find_unused_parameters=unused, broadcast_buffers=False)

    def _check_border(self) -> None:
        """loss.border must leave some of an LR patch for the loss to see."""
        border, patch = self.cfg.loss.border, self.cfg.data.lr_patch
        if border < 0 or 2 * border >= patch:
            raise TrainingError(f"loss.border {border} leaves nothing of an LR patch of {patch} px: use 0 to {(patch - 1) // 2}")

    def _recipe_hook(self) -> Callable | None:
        """The loss hook the run's recipe brings, when none is given: DSCLoRA's distillation for a LoRA
        student, ESPAN's self-distillation for espan-sd. Its terms see sr and hr without the border."""
        cfg = self.cfg
        if cfg.lora.student:
            from .distill import Distillation

            return Distillation(cfg.lora, self.network, self.device, border=cfg.loss.border)
        if cfg.recipe.name == "espan-sd":
            from .distill import SelfDistillation

            return SelfDistillation(cfg, self.loss_fn, border=cfg.loss.border)
        return None

    def _teacher(self) -> nn.Module | None:
        """distill.teacher's network, on the device, or None without one."""
        if not self.cfg.distill.teacher:
            return None
        from .distill import load_teacher

        return load_teacher(self.cfg.distill.teacher, self.cfg.model.scale, self.device)

    def _check_some_loss(self, given_hook: Callable | None) -> None:
        """Refuse a run with nothing to learn from: every loss weight zero, no distillation, no hook given."""
        cfg = self.cfg
        distills = bool(cfg.lora.student) and bool(cfg.lora.teacher_weight or cfg.lora.affinity_weight)
        distills |= bool(cfg.distill.teacher and cfg.distill.weight)
        if not has_terms(cfg.loss) and not distills and given_hook is None:
            raise TrainingError("every loss weight is zero: set one of loss.l1, l2, charbonnier, gv, freq (or a lora teacher term)")

    def _amp_dtype(self) -> torch.dtype | None:
        """run.amp as the autocast dtype (None: fp32), refusing what this device cannot do."""
        amp = self.cfg.run.amp
        if amp == "auto":  # what the shipped configs say: bf16 only where it is not emulated
            amp = "bf16" if self.device.type in ("cuda", "cpu") and native_bf16(self.device) else "none"
        if amp == "none":
            return None
        if amp == "fp16" and self.device.type != "cuda":
            raise TrainingError('fp16 mixed precision needs CUDA: use run.amp = "bf16" on this device')
        if amp not in ("bf16", "fp16"):
            raise TrainingError(f"unknown run.amp '{amp}' (none, auto, bf16 or fp16)")
        if amp == "bf16":
            warn_if_emulated_bf16(self.device)
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _optimizer(self) -> torch.optim.Optimizer:
        """optim.name's optimizer over the parameters that train (requires_grad)."""
        o = self.cfg.optim
        kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        if o.name not in kinds:
            raise TrainingError(f"unknown optimizer '{o.name}' (adam or adamw)")
        if not self.trainable:
            raise TrainingError("the network has no trainable parameters")
        return kinds[o.name](self.trainable, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    def _tensorboard(self) -> Any:
        """A SummaryWriter in tb/ on rank 0 when tensorboard is installed, else None."""
        if not self.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: pip install "esrcli[tensorboard]"
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    # --- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What checkpoint.pt holds for the run as it is now."""
        return checkpoint_state(self.step, self.cfg, self.network, self.ema, self.optimizer, self.scheduler, self.scaler)

    def save(self) -> None:
        """Write checkpoint.pt (rank 0), with every rank waiting for it."""
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_atomic(self.state(), self.run_dir / CHECKPOINT)
        if self.world > 1:
            dist.barrier()

    def load(self) -> None:
        """Resume from checkpoint.pt; rank 0 drops the records logged after it."""
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            raise TrainingError(f"{self.run_dir}: no {CHECKPOINT} to resume from")
        state = read_checkpoint(self.run_dir)
        self.step = restore(state, path, self.network, self.ema, self.optimizer, self.scheduler, self.scaler)
        if self.main:
            truncate_metrics(self.run_dir, self.step)

    # --- steps ----------------------------------------------------------------------------

    def _forward_loss(
        self, lr: torch.Tensor, hr: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """_losses with the terms read back as numbers: for looking at one step, not for the loop."""
        loss, parts = self._losses(lr, hr, teacher)
        return loss, {k: float(v) for k, v in parts.items()}

    def _losses(self, lr: torch.Tensor, hr: torch.Tensor, teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, Terms]:
        """The step's loss on the patch without its border (loss.border): the network sees all of `lr`.
        `teacher` is the teacher's output for the patch (distill.teacher), weighed by distill.weight.
        A loss hook (DSCLoRA's teacher, ESPAN's self-distillation) may run the forward itself and adds its terms.
        The terms stay on the device: reading them would make the host wait for the GPU every step."""
        edge = self.cfg.loss.border * self.cfg.model.scale
        hr = trim(hr, edge)
        forward = getattr(self.loss_hook, "forward", None)
        sr = forward(self.model, lr, self.step) if forward is not None else self.model(lr)
        sr = trim(sr.float(), edge)
        loss, parts = self.loss_fn(sr, hr)
        if teacher is not None and self.cfg.distill.weight:
            parts["teacher"] = self.cfg.distill.weight * F.l1_loss(sr, trim(teacher, edge))
            loss = loss + parts["teacher"]
        if self.loss_hook is not None:
            extra_loss, extra_parts = self.loss_hook(lr, sr, hr)
            loss, parts = loss + extra_loss, {**parts, **extra_parts}
        return loss, parts

    def train_step(self, lr: torch.Tensor, hr: torch.Tensor, teacher: torch.Tensor | None = None) -> tuple[float, dict[str, float]]:
        """One step with its loss and terms read back at once (and a non-finite loss refused before it
        changes the weights): for tests and callers stepping by hand. fit reads them only when it logs."""
        loss, parts = self._step(lr, hr, teacher, check=True)
        values, terms = self._read([loss], parts)
        return values[0], terms

    def _step(
        self, lr: torch.Tensor, hr: torch.Tensor, teacher: torch.Tensor | None = None, *, check: bool = False
    ) -> tuple[torch.Tensor, Terms]:
        """One optimisation step that never waits for the device (unless `check`): the loss comes back
        detached, still on the device. A non-finite loss is found when fit reads the losses back."""
        fmt = torch.channels_last if self.cfg.run.channels_last and self.device.type != "mps" else torch.contiguous_format
        lr = lr.to(self.device, non_blocking=True).contiguous(memory_format=fmt)  # asynchronous from pinned memory (CUDA)
        hr = hr.to(self.device, non_blocking=True)
        teacher = teacher.to(self.device, non_blocking=True) if teacher is not None else None
        self.model.train()
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            loss, parts = self._losses(lr, hr, teacher)
        if check and not torch.isfinite(loss):
            raise diverged(self.step + 1, float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.optim.clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self._update_ema()
        self.step += 1
        return loss.detach(), parts

    def _read(self, losses: list[torch.Tensor], parts: Terms) -> tuple[list[float], dict[str, float]]:
        """`losses` and `parts` as numbers, in one transfer from the device (the only wait for it)."""
        names = list(parts)
        tensors = [torch.as_tensor(v).detach().float().to(self.device).reshape(()) for v in (*losses, *parts.values())]
        values = torch.stack(tensors).tolist()
        return values[: len(losses)], dict(zip(names, values[len(losses) :]))

    def _stop_if_diverged(self, losses: list[float], first_step: int) -> None:
        """The first non-finite loss among steps first_step, first_step + 1, ... ends the run."""
        for step, value in enumerate(losses, first_step):
            if not math.isfinite(value):
                raise diverged(step, value)

    def _stop_if_window_diverged(self, window: list[torch.Tensor]) -> None:
        """_stop_if_diverged on the losses of the steps since the last record, still on the device."""
        if window:
            self._stop_if_diverged(self._read(window, {})[0], self.step - len(window) + 1)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema = lerp(ema, weights, 1 - decay) for every trained tensor, in one multi-tensor call: the same
        arithmetic as a loop of Tensor.lerp_, without a kernel launch per parameter."""
        if self._ema_pairs is None:
            return
        decay = min(self.cfg.optim.ema, (1 + self.step) / (10 + self.step))  # early steps follow the model closely
        ema_params, params, ema_buffers, buffers = self._ema_pairs
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, buffers)

    def evaluation_network(self) -> nn.Module:
        """What validation and export see: the EMA weights, at the student's depth."""
        network = self.ema if self.ema is not None else self.network
        depth = student_depth(self.cfg)
        return AtDepth(network, depth) if depth is not None else network

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """PSNR and SSIM (Y channel) of the evaluation network on data.val; None without data.val."""
        if not self.cfg.data.val:
            return None
        network = self.evaluation_network().eval()
        score = evaluate_set(network, self.cfg.model.scale, Path(self.cfg.data.val), channel="y", limit=self.cfg.data.val_limit or None)
        return {"psnr": round(score.psnr, 4), "ssim": round(score.ssim, 4)}

    # --- the loop -------------------------------------------------------------------------

    def log(self, record: Event) -> None:
        """Append `record` to metrics.jsonl and tensorboard (rank 0 alone)."""
        if not self.main:
            return
        with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, record.get("step", self.step))

    def fit(self, on_event: Callable[[Event], None] | None = None) -> None:
        """Train to cfg.run.steps; a Ctrl-C saves a checkpoint first, then propagates."""
        cfg = self.cfg
        emit = on_event if (on_event and self.main) else (lambda e: None)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG).write_text(cfg.to_toml(), encoding="utf-8")
        if self.step >= cfg.run.steps:
            emit({"kind": "done", "step": self.step})
            return
        sources = self._sources(emit)
        degrader = Degrader(cfg.degradation, cfg.model.scale) if cfg.degradation.enabled else None
        dataset = PatchDataset(sources, cfg.model.scale, cfg.data.lr_patch, cfg.run.seed, self.rank, degrader)
        loader = make_loader(dataset, self.step, cfg.run.steps, cfg.data.batch, self.workers, pin_memory=self.device.type == "cuda")
        emit(self._start_event(dataset))
        self._train(loader, emit)
        self._check_ranks_in_sync(emit)
        emit({"kind": "done", "step": self.step})

    def _sources(self, emit: Callable[[Event], None]) -> list[Source]:
        """The training images: data.train's, data.graphics' generated ones, and with distill.teacher the
        teacher's outputs as their labels (after which the teacher is dropped)."""
        cfg = self.cfg
        sources = load_sources(cfg.data.train, cfg.model.scale)
        if cfg.data.graphics:
            from .graphics import graphics_images

            sources += [Source(image) for image in graphics_images(cfg.data.graphics, seed=cfg.run.seed)]
        if self.teacher is not None:
            from .distill import label_with_teacher

            emit({"kind": "labelling", "step": self.step, "images": len(sources), "teacher": cfg.distill.teacher})
            sources = label_with_teacher(sources, cfg.model.scale, self.teacher, self.device)
            self.teacher = None  # its work is done: free its memory for the run
        return sources

    def _start_event(self, dataset: PatchDataset) -> Event:
        """What a run reports as it starts: where it is, its data and how it computes."""
        cfg = self.cfg
        precision = (
            "fp32" if self.amp is None else str(self.amp).removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16")
        )
        return {
            "kind": "start",
            "step": self.step,
            "steps": cfg.run.steps,
            "images": len(dataset.sources),
            "left_out": dataset.left_out,
            "patch": (cfg.data.lr_patch + 2 * MARGIN) * cfg.model.scale,
            "world": self.world,
            "workers": self.workers,
            "device": str(self.device),
            "precision": precision,
            "left_at_init": self.left_at_init,
            "narrowed_init": self.narrowed_init,
        }

    def _train(self, loader: Iterable, emit: Callable[[Event], None]) -> None:
        """The steps, each followed by what is due: a record, validation, a checkpoint. A Ctrl-C saves a
        checkpoint (unless the steps since the last record diverged), then propagates.

        The losses of the steps since the last log stay on the device until the next: reading them is a
        wait for the GPU, so it happens once per run.log_every steps (and before validating or saving)."""
        cfg = self.cfg
        window: list[torch.Tensor] = []  # the losses of the steps since the last record, still on the device
        window_start = time.perf_counter()
        try:
            for lr, hr, *teacher in loader:
                loss, parts = self._step(lr, hr, *teacher)
                window.append(loss)
                if self.step % cfg.run.log_every == 0 or self.step == cfg.run.steps:
                    self._log_window(window, parts, window_start, emit)
                    window_start, window = time.perf_counter(), []
                self._validate_and_save(window, emit)
        except KeyboardInterrupt:
            self._stop_if_window_diverged(window)  # a diverged run keeps its last good checkpoint
            self.save()
            emit({"kind": "interrupted", "step": self.step})
            raise

    def _log_window(self, window: list[torch.Tensor], parts: Terms, window_start: float, emit: Callable[[Event], None]) -> None:
        """Read back the losses of the steps since the last record (stopping a diverged run) and log them."""
        losses, terms = self._read(window, parts)
        self._stop_if_diverged(losses, self.step - len(window) + 1)
        rate = len(window) / max(1e-9, time.perf_counter() - window_start)
        record = {
            "step": self.step,
            "loss": sum(losses) / len(losses),  # the mean over the steps since the last record
            **terms,  # the last step's
            "lr": self.scheduler.get_last_lr()[0],
            "it_s": round(rate, 3),
        }
        self.log(record)
        emit({"kind": "step", **record})

    def _validate_and_save(self, window: list[torch.Tensor], emit: Callable[[Event], None]) -> None:
        """Validate and checkpoint where run.val_every and run.ckpt_every (and the last step) say."""
        cfg = self.cfg
        validating = bool(cfg.run.val_every and self.step % cfg.run.val_every == 0) or self.step == cfg.run.steps
        saving = bool(cfg.run.ckpt_every and self.step % cfg.run.ckpt_every == 0) or self.step == cfg.run.steps
        if validating or saving:  # never validate or save weights that diverged
            self._stop_if_window_diverged(window)
        if validating and self.main and (scores := self.validate()):
            self.log({"step": self.step, **{f"val_{k}": v for k, v in scores.items()}})
            emit({"kind": "val", "step": self.step, **scores})
        if saving:
            self.save()
            emit({"kind": "checkpoint", "step": self.step})

    def _check_ranks_in_sync(self, emit: Callable[[Event], None]) -> None:
        """Every rank must end with the same weights; a mismatch means DDP went wrong."""
        if self.world == 1:
            return
        digests: list[str | None] = [None] * self.world
        dist.all_gather_object(digests, digest(self.network))
        record = {"step": self.step, "ranks_in_sync": len(set(digests)) == 1, "rank_digests": digests}
        self.log(record)
        emit({"kind": "sync", **record})
        if not record["ranks_in_sync"]:
            raise TrainingError(f"ranks ended with different weights: {digests}")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if dist.is_initialized():
            dist.destroy_process_group()
