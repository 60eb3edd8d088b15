"""Spreading work over a Ray cluster: image files, and the segments of one video, on actors that each
load the model once.

Ray is optional (`pip install "esrcli[ray]"`) and imported only here. Workers read the inputs and
write the outputs themselves, so every worker must see the same filesystem as the driver (a shared
or network mount, or one machine); a worker that does not is refused at start with one line. The
driver keeps the bookkeeping: which task runs where, outcomes in order, the video manifest, and
the final mux, so `--resume` works across local and Ray runs alike.

A worker that dies mid-task (its process killed, its node lost) is replaced and its task given to
another; a task that fails for its own reasons (a corrupt file) is reported once, never retried.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .batch import Outcome, Settings, Task, process
from .errors import ClusterError as ClusterError
from .errors import EsrError
from .tiling import TilePlan
from .video import SegmentWork, VideoError, VideoJob, VideoResult, encode_span, finish_video, missing_runs, prepare_video, resume_hint

MAX_ATTEMPTS = 3  # a task whose worker died this many times is reported as failed


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker opens: the model and its tiling, as the driver resolved them."""

    model: str
    device: str  # "auto": a worker with a GPU uses it
    precision: str
    scale: float | None
    tiling: dict[int, TilePlan]  # the driver's tile plan per pass (Pipeline.tiling)
    threads: int  # torch threads of a CPU worker: the driver's, so that the rounding is the same
    denoise: float | str | None = None  # --denoise: a strength, or auto (each file measured where it runs)
    tta: bool = False  # --tta: the x8 self-ensemble, as the driver's pipeline runs it


@dataclass
class ClusterReport:
    workers: int = 0
    gpus: int = 0
    retried: list[str] = field(default_factory=list)  # tasks whose worker died, in the order it happened


def check_device(device: str) -> None:
    """Ray numbers each worker's GPUs from 0 (it sets CUDA_VISIBLE_DEVICES per actor), so a driver-side
    index means nothing there: refuse it before any work."""
    if device.strip().lower().startswith("cuda:"):
        raise ClusterError(f"--device {device} with --ray: Ray gives each worker its own GPU; use --device cuda (or auto)")


def connect(address: str) -> Any:
    """ray, initialised against `address`: "local" starts a cluster for this run, else anything
    ray.init(address=...) takes ("auto", "HOST:PORT", "ray://HOST:PORT")."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # the C++ core's retry warnings are not for users
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if address == "local" or host in ("127.0.0.1", "localhost", "::1"):
        # A cluster on this machine: without this, Ray advertises and dials the machine's network address
        # even for a head on 127.0.0.1. Read when ray is imported, so set before.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address not in ("local", "auto"):
        _check_reachable(address)
    try:
        import ray
    except ImportError:
        raise ClusterError('--ray needs Ray: pip install "esrcli[ray]"') from None
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "configure_logging": True}
    try:
        if address == "local":
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"--ray {address}: cannot connect ({' '.join(str(exc).split())[:200]}); is the cluster running? With token "
            "authentication set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or the token file ~/.ray/auth_token)"
        ) from None
    global _stdout
    _stdout, sys.stdout = sys.stdout, sys.stderr  # Ray prints worker deaths on stdout, which is for --json
    return ray


_stdout = None


def disconnect(ray: Any) -> None:
    """Leave the cluster (stopping it if `connect` started it) and give stdout back."""
    global _stdout
    try:
        ray.shutdown()  # also stops Ray's message thread, so nothing more can reach stdout
    finally:
        if _stdout is not None:
            sys.stdout, _stdout = _stdout, None


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes: Ray itself retries a dead address for several minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(f"--ray {address}: nothing answers there ({reason}); is the cluster running?") from None


def _worker_class(ray: Any) -> Any:
    class Worker:
        """One model, opened once, on this worker's device."""

        def __init__(self, spec: WorkerSpec, shared: list[str]) -> None:
            for path in shared:  # files the driver sees: a worker that does not, does not share its filesystem
                if not Path(path).exists():
                    raise ClusterError(
                        f"--ray: the worker on {socket.gethostname()} does not see {path}; esr --ray needs the inputs and "
                        "outputs on a filesystem every worker shares (streaming files through the driver is not supported)"
                    )
            import torch

            from .api import Model

            if spec.threads:
                torch.set_num_threads(spec.threads)
            self.model = Model(
                spec.model, scale=spec.scale, device=spec.device, precision=spec.precision, denoise=spec.denoise, tta=spec.tta
            )
            self.pipeline = self.model.pipeline(spec.scale, tiling=spec.tiling)

        def pid(self) -> int:
            return os.getpid()

        def image(self, task: Task, settings: Settings) -> Outcome:
            return process(task, self.pipeline, settings)

        def segments(self, work: SegmentWork, first: int, stop: int) -> list[tuple[int, str, int]]:
            done: list[tuple[int, str, int]] = []
            encode_span(work, self.pipeline, first, stop, on_segment=lambda i, f, n: done.append((i, f, n)))
            return done

    return Worker


class Pool:
    """Actors on the cluster, each fed one task at a time; dead ones are replaced and their task retried."""

    def __init__(self, ray: Any, spec: WorkerSpec, workers: int, shared: list[Path]) -> None:
        self.ray, self.spec, self.shared = ray, spec, [str(p) for p in shared]
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.report = ClusterReport(gpus=gpus)
        if gpus:  # one actor per GPU, each holding its GPU
            self.options = {"num_gpus": 1, "num_cpus": 1}
            count = gpus
        else:
            # Each worker runs with the driver's thread count (spec.threads), whatever its share of the CPUs:
            # a convolution's rounding depends on it, and outputs must equal a local run's.
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            count = max(1, workers or cpus // max(1, spec.threads))
            self.options = {"num_cpus": max(1, cpus // count)}
            self.spec = replace(spec, threads=spec.threads or max(1, cpus // count), device="cpu" if spec.device == "auto" else spec.device)
        self.actor_class = ray.remote(max_restarts=0, max_task_retries=0)(_worker_class(ray))
        self.actors = [self._start() for _ in range(count)]
        self.report.workers = count
        self._check_started()

    def _start(self) -> Any:
        return self.actor_class.options(**self.options).remote(self.spec, self.shared)

    def _check_started(self) -> None:
        try:
            self.ray.get([a.pid.remote() for a in self.actors])
        except Exception as exc:  # the actor's __init__ failed: the same for every worker
            cause = getattr(exc, "cause", None) or exc
            raise ClusterError(" ".join(str(cause).split())[-300:]) from None

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def run(
        self, jobs: list[Any], call: Callable[[Any, Any], Any], name: Callable[[Any], str], on_result: Callable[[int, Any], None]
    ) -> None:
        """Every job through `call(actor, job)`, one at a time per actor; `on_result(position, result)` as
        they finish, where a result is an exception when the job could not be done."""
        ray = self.ray
        pending = list(reversed(range(len(jobs))))
        attempts = [0] * len(jobs)
        running: dict[Any, tuple[int, int]] = {}  # ref -> (actor slot, job position)

        def submit(slot: int) -> None:
            position = pending.pop()
            running[call(self.actors[slot], jobs[position])] = (slot, position)

        for slot in range(min(len(self.actors), len(pending))):
            submit(slot)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            slot, position = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError):
                attempts[position] += 1
                self.report.retried.append(name(jobs[position]))
                self.actors[slot] = self._start()  # a fresh worker takes this slot
                if attempts[position] >= MAX_ATTEMPTS:
                    on_result(position, ClusterError(f"{name(jobs[position])}: its worker died {MAX_ATTEMPTS} times"))
                else:
                    pending.append(position)
            except ray.exceptions.RayTaskError as exc:  # the task's own failure: reported once
                cause = getattr(exc, "cause", None)
                on_result(position, cause if isinstance(cause, Exception) else ClusterError(" ".join(str(exc).split())[-300:]))
            else:
                on_result(position, result)
            if pending:
                submit(slot)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def shared_marker(folder: Path) -> Path:
    """A file the driver writes where the outputs go, for workers to check that they see it."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".esr-ray-{uuid.uuid4().hex[:12]}"
    marker.write_text("esr --ray: if a worker can read this, it shares the driver's filesystem\n")
    return marker


def upscale_images(
    ray: Any, tasks: list[Task], settings: Settings, spec: WorkerSpec, *, workers: int, on_outcome: Callable[[Outcome], None] | None = None
) -> tuple[list[Outcome], ClusterReport]:
    """Every task on the cluster; outcomes in task order (each reported as it completes)."""
    if not tasks:
        return [], ClusterReport()
    tasks = [replace(t, source=t.source.resolve(), output=t.output.absolute()) for t in tasks]  # workers run elsewhere
    marker = shared_marker(tasks[0].output.parent)
    results: dict[int, Outcome] = {}
    pool = None
    try:
        pool = Pool(ray, spec, workers, [marker, tasks[0].source])

        def finished(position: int, result: Any) -> None:
            task = tasks[position]
            outcome = result if isinstance(result, Outcome) else Outcome(task.source, task.output, "failed", str(result))
            results[position] = outcome
            if on_outcome:
                on_outcome(outcome)

        pool.run(tasks, lambda actor, task: actor.image.remote(task, settings), lambda t: str(t.source), finished)
    finally:
        if pool is not None:
            pool.close()
        marker.unlink(missing_ok=True)
    return [results[i] for i in sorted(results)], pool.report


def upscale_video(
    ray: Any,
    job: VideoJob,
    spec: WorkerSpec,
    *,
    workers: int,
    on_progress: Callable[[int, int], None] | None = None,
    on_info: Callable[[Any], None] | None = None,
) -> tuple[VideoResult, ClusterReport]:
    """The missing segments of `job` on the cluster, one segment per task; the manifest and the final mux here."""
    job = replace(job, src=job.src.resolve(), dst=job.dst.absolute())
    work, manifest = prepare_video(job, on_info)
    resumed = manifest.frames_done
    if on_progress:
        on_progress(resumed, work.info.frames)
    segments = [i for first, stop in missing_runs(work, manifest) for i in range(first, stop)]
    failures: list[Exception] = []

    def finished(position: int, result: Any) -> None:
        if isinstance(result, Exception):
            failures.append(result)
            return
        for index, file, frames in result:
            manifest.record(work.folder, index, file, frames)
        if on_progress:
            on_progress(manifest.frames_done, work.info.frames)

    pool = None
    try:
        pool = Pool(ray, spec, workers, [work.folder / "manifest.json", work.src])
        pool.run(segments, lambda actor, i: actor.segments.remote(work, i, i + 1), lambda i: f"segment {i}", finished)
    except BaseException:
        if not manifest.segments:  # nothing worth resuming: leave no trace
            shutil.rmtree(work.folder, ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.close()
    if failures:
        first = failures[0] if isinstance(failures[0], EsrError) else ClusterError(" ".join(str(failures[0]).split()))
        if not manifest.segments:
            shutil.rmtree(work.folder, ignore_errors=True)
            raise first
        raise VideoError(f"{first}; {resume_hint(work.folder, manifest)}") from failures[0]
    return finish_video(job, work, manifest, resumed), pool.report
