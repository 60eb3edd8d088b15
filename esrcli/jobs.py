"""Where a command's work runs: here through the engine, or on a Ray cluster; and what it reports.

`esr upscale` and `esr video` (and any library user) make one call each: the choice between a local
run and Ray, the workers' specification, and the summary a script reads (`--json`) are decided here,
so the commands only map options and print.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import Batch, Outcome, Settings, Task, run_batch
from .scaling import Pipeline
from .video import VideoJob, VideoResult, decide_denoise, upscale_video


@dataclass
class Ray:
    """--ray ADDRESS and --ray-workers: a cluster to spread the work over. `open()` connects (a refusal is
    one line, before any progress bar); `close()` leaves it, stopping a cluster started for the run."""

    address: str
    workers: int = 0
    handle: Any = field(default=None, repr=False)

    def open(self) -> Ray:
        from . import raydist

        self.handle = raydist.connect(self.address)
        return self

    def close(self) -> None:
        if self.handle is not None:
            from . import raydist

            raydist.disconnect(self.handle)
            self.handle = None


@dataclass(frozen=True)
class ModelSpec:
    """What opens the model elsewhere: the reference and the options it was opened with here."""

    ref: str
    device: str
    precision: str
    scale: float | None
    denoise: float | str | None = None

    def for_workers(self, pipeline: Pipeline) -> Any:
        """The Ray workers' spec: the same model, with this machine's tile plan and thread count. A worker
        that planned for its own memory would cut other tiles, and CPU convolutions round differently with
        another number of threads (measured: 1 pixel in 2 to 11 million off by one level), so both travel."""
        import torch

        from .raydist import WorkerSpec

        ref = str(Path(self.ref).resolve()) if Path(self.ref).exists() else self.ref  # workers start elsewhere
        denoise = self.denoise if pipeline.choose is not None else pipeline.strength  # a video's was decided on this machine
        return WorkerSpec(
            ref,
            self.device,
            self.precision,
            self.scale,
            pipeline.tiling,
            threads=torch.get_num_threads(),
            denoise=denoise,
            tta=pipeline.tta,
        )


@dataclass
class FilesRun:
    """What `upscale_files` did: outcomes in task order, how it ended, and where it ran."""

    batch: Batch
    outcomes: list[Outcome]
    seconds: float
    interrupted: KeyboardInterrupt | None = None
    cluster: Any = None  # raydist.ClusterReport with Ray

    def of(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    def summary(self, *, model: str, pipeline: Pipeline) -> dict:
        """The --json document."""
        return {
            "model": model,
            "scale": pipeline.plan.target,
            "plan": pipeline.plan.describe(),
            "tta": pipeline.tta,
            "inputs": len(self.batch.tasks) + len(self.batch.failures),
            "outputs": [
                {"input": str(o.source), "output": str(o.output), "seconds": round(o.seconds, 3), **(o.denoise or {})}
                for o in self.of("done")
            ],
            "skipped": [{"input": str(o.source), "output": str(o.output)} for o in self.of("skipped")],
            "failures": [{"input": str(o.source), "error": o.error} for o in self.of("failed")],
            "retries": pipeline.retries,
            **_cluster(self.cluster),
            "interrupted": self.interrupted is not None,
            "seconds": round(self.seconds, 3),
        }


def upscale_files(
    batch: Batch,
    pipeline: Pipeline,
    settings: Settings,
    model: ModelSpec,
    *,
    ray: Ray | None = None,
    on_start: Callable[[Task, int], None] | None = None,
    on_tile: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> FilesRun:
    """Every planned task, here or on the cluster; an interrupt ends the run cleanly (the file being written
    is finished) and is recorded, for the caller to report and re-raise."""
    started = time.perf_counter()
    run = FilesRun(batch, list(batch.failures), 0.0)
    collected: list[Outcome] = []

    def finished(outcome: Outcome) -> None:
        collected.append(outcome)
        if on_outcome:
            on_outcome(outcome)

    try:
        if ray is not None:
            from . import raydist

            _, run.cluster = raydist.upscale_images(
                ray.handle, batch.tasks, settings, model.for_workers(pipeline), workers=ray.workers, on_outcome=finished
            )
        else:
            run_batch(batch.tasks, pipeline, settings, on_start=on_start, on_tile=on_tile, on_outcome=finished)
    except KeyboardInterrupt as exc:  # the file being written was finished; nothing half-written remains
        run.interrupted = exc
    run.outcomes.extend(collected)
    run.seconds = time.perf_counter() - started
    return run


def upscale_one_video(
    job: VideoJob,
    model: ModelSpec,
    *,
    ray: Ray | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_info: Callable[[Any], None] | None = None,
) -> tuple[VideoResult, Any]:
    """The video here or its segments on the cluster: (result, the cluster's report or None)."""
    if ray is None:
        return upscale_video(job, on_progress=on_progress, on_info=on_info), None
    job = decide_denoise(job)  # once per video, here: every worker's segment gets the same strength
    from . import raydist

    return raydist.upscale_video(
        ray.handle, job, model.for_workers(job.pipeline), workers=ray.workers, on_progress=on_progress, on_info=on_info
    )


def video_summary(job: VideoJob, result: VideoResult, *, model: str, seconds: float, cluster: Any = None) -> dict:
    """The --json document of `esr video`."""
    return {
        "input": str(job.src),
        "output": str(job.dst),
        "model": model,
        "scale": job.pipeline.plan.target,
        "tta": job.pipeline.tta,
        "frames": result.frames,
        "resumed_from": result.resumed_from,
        "rate": str(result.rate),
        "truncated_input_missing_seconds": round(float(result.missing), 3),
        "size": list(result.size),
        "retries": job.pipeline.retries,
        "denoise": result.denoise,
        "seconds": round(seconds, 3),
        "fps": round((result.frames - result.resumed_from) / seconds, 3) if seconds else None,
        **_cluster(cluster),
    }


def _cluster(report: Any) -> dict:
    return {"ray": {"workers": report.workers, "gpus": report.gpus, "retried": report.retried}} if report else {}
