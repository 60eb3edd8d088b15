"""`esr train`: every architecture and loss learns, resume equals uninterrupted, export equals the graph, DDP stays in sync."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from esrcli.cli import main
from esrcli.runconfig import ConfigError, TrainConfig
from esrcli.runs import network_from_run
from esrcli.train.data import PatchDataset
from esrcli.train.distill import extra_blocks_at
from esrcli.train.export import export_run
from esrcli.train.losses import dct2, frequency_aware, gradient_variance
from esrcli.train.trainer import Trainer, TrainingError, lr_factor
from esrcli.weights import load_network


def config(images: Path, **sets) -> TrainConfig:
    cfg = TrainConfig()
    cfg.data.train = [str(images)]
    cfg.data.val = str(images)
    cfg.data.val_limit = 2
    for key, value in {
        "model.arch": "span",
        "model.scale": 2,
        "data.lr_patch": 12,
        "data.batch": 4,
        "data.workers": 0,
        "optim.lr": 2e-3,
        "optim.ema": 0.9,
        "run.steps": 6,
        "run.log_every": 1,
        "run.val_every": 0,
        "run.ckpt_every": 3,
        "run.device": "cpu",
        **sets,
    }.items():
        cfg.set(key, value)
    cfg.model.args.setdefault("channels", 8)
    return cfg


def fixed_batch(cfg: TrainConfig, images: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from esrcli.train.data import load_sources

    ds = PatchDataset(load_sources([str(images)], cfg.model.scale), cfg.model.scale, cfg.data.lr_patch)
    pairs = [ds[i] for i in range(4)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@pytest.mark.parametrize(
    "arch,args",
    [
        ("span", {"channels": 8}),
        ("efdn", {"channels": 8}),
        ("espan", {"channels": 8, "n_blocks": 2}),
        ("spanf", {"channels": 8, "n_blocks": 2}),
    ],
)
def test_every_architecture_learns_in_training_form(images, tmp_path, arch, args):
    cfg = config(images, **{"model.arch": arch, "data.lr_patch": 20})
    cfg.model.args = dict(args)
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.network.form == "train"
    lr, hr = fixed_batch(cfg, images)
    first, _ = trainer.train_step(lr, hr)
    for _ in range(30):
        last, _ = trainer.train_step(lr, hr)
    assert last < 0.9 * first, (first, last)  # EFDN's clamped output learns slowest from random weights


@pytest.mark.parametrize("loss", ["l1", "l2", "charbonnier", "gv", "freq"])
def test_every_loss_trains(images, tmp_path, loss):
    cfg = config(images, **{"loss.l1": 0.0, f"loss.{loss}": 1.0})
    trainer = Trainer(cfg, tmp_path / "run")
    lr, hr = fixed_batch(cfg, images)
    first, parts = trainer.train_step(lr, hr)
    assert set(parts) == {loss}
    for _ in range(25):
        last, _ = trainer.train_step(lr, hr)
    assert last < 0.8 * first, (first, last)


def test_loss_terms_vanish_for_identical_images_and_dct_is_orthonormal():
    x = torch.rand(2, 3, 16, 16)
    assert all(float(v) == 0 for v in gradient_variance(x, x).values())
    assert all(float(v) == 0 for v in frequency_aware(x, x).values())
    assert torch.allclose((dct2(x) ** 2).sum(), (x**2).sum(), rtol=1e-4)  # Parseval
    assert float(gradient_variance(x, torch.rand_like(x))["x"]) > 0


def test_samples_are_a_pure_function_of_seed_and_index(images):
    from esrcli.train.data import load_sources

    sources = load_sources([str(images)], 2)
    a, b = PatchDataset(sources, 2, 12, seed=3), PatchDataset(sources, 2, 12, seed=3)
    assert all(torch.equal(a[i][1], b[i][1]) for i in (0, 5, 99))
    assert not torch.equal(a[0][1], PatchDataset(sources, 2, 12, seed=4)[0][1])
    lr, hr = a[7]
    assert lr.shape == (3, 12, 12) and hr.shape == (3, 24, 24)
    assert torch.allclose(lr, torch.nn.functional.avg_pool2d(hr[None], 2)[0], atol=0.08)  # LR is the HR, smaller


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.mark.parametrize("degradation", ["none", "light"])
def test_resume_equals_uninterrupted(images, tmp_path, degradation):
    sets = {"run.steps": 8, "degradation.preset": degradation}
    straight = Trainer(config(images, **sets), tmp_path / "a")
    straight.fit()
    interrupted = Trainer(config(images, **sets), tmp_path / "b")

    def ctrl_c_at_step_5(event: dict) -> None:
        if event["kind"] == "step" and event["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(ctrl_c_at_step_5)
    resumed = Trainer(config(images, **sets), tmp_path / "b", resume=True)
    assert resumed.step == 5
    resumed.fit()
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-6
    for p, q in zip(straight.network.parameters(), resumed.network.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_export_loads_anywhere_with_the_graph_output(images, tmp_path):
    trainer = Trainer(config(images, **{"run.steps": 5}), tmp_path / "run")
    trainer.fit()
    out = export_run(tmp_path / "run", tmp_path / "model.safetensors")
    exported = load_network(out)
    x = torch.rand(1, 3, 20, 18)
    with torch.no_grad():
        expected = trainer.evaluation_network().eval()(x)
    assert exported.form == "fused"
    assert (exported(x) - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    result = CliRunner().invoke(main, ["upscale", str(images / "img0.png"), "-m", str(out), "-o", str(tmp_path / "up.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "up.png").size == (224, 192)
    refused = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "s.safetensors"), "--strength", "0.5"])
    assert refused.exit_code != 0 and "not a LoRA run" in refused.output and not (tmp_path / "s.safetensors").exists()
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):  # the run straight to ONNX
        result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "run.onnx"), "--json"])
        assert result.exit_code == 0, result.output
        assert all(check["max_levels"] <= 2 for check in json.loads(result.output)["checks"])


def test_espan_self_distillation_shrinks_to_the_student(images, tmp_path):
    cfg = config(images, **{"model.arch": "espan", "recipe.name": "espan-sd", "recipe.extra_blocks": 2, "run.steps": 6})
    cfg.model.args = {"channels": 8, "n_blocks": 2}
    assert [extra_blocks_at(cfg, s) for s in range(6)] == [2, 2, 1, 1, 0, 0]
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.network.n_blocks == 4
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "sd" in records[0] and "teacher" in records[0]
    network, _, step = network_from_run(tmp_path / "run")
    assert step == 6 and network.n_blocks == 2 and network.form == "fused"


def test_loss_border_hides_the_patch_edges_from_every_loss(images, tmp_path):
    """loss.border = b: HR pixels within b * scale of a patch edge change no loss term; inside they do."""
    cfg = config(images, **{"loss.border": 2, "loss.gv": 0.5, "loss.freq": 0.5, "run.channels_last": False})
    trainer = Trainer(cfg, tmp_path / "run")
    lr, hr = fixed_batch(cfg, images)
    edge = 2 * cfg.model.scale
    noisy_edge, noisy_inside = hr.clone(), hr.clone()
    noisy_edge[..., :edge, :], noisy_edge[..., :, -edge:] = torch.rand_like(hr[..., :edge, :]), torch.rand_like(hr[..., :, -edge:])
    noisy_inside[..., edge : edge + 3, edge : edge + 3] = torch.rand_like(hr[..., edge : edge + 3, edge : edge + 3])
    with torch.no_grad():
        (base, parts), (at_edge, _), (inside, _) = (trainer._forward_loss(lr, h) for h in (hr, noisy_edge, noisy_inside))
    assert set(parts) == {"l1", "gv", "freq"} and float(at_edge) == float(base) and float(inside) != float(base)
    without = Trainer(config(images, **{"run.channels_last": False}), tmp_path / "plain")
    with torch.no_grad():
        assert float(without._forward_loss(lr, noisy_edge)[0]) != float(without._forward_loss(lr, hr)[0])
    with pytest.raises(TrainingError, match="loss.border 6 leaves nothing of an LR patch of 12 px"):
        Trainer(config(images, **{"loss.border": 6}), tmp_path / "too-wide")


def test_schedules():
    cfg = TrainConfig()
    cfg.run.steps, cfg.optim.warmup = 100, 10
    assert lr_factor(cfg, 0) == pytest.approx(0.1) and lr_factor(cfg, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 100) == pytest.approx(cfg.optim.min_lr / cfg.optim.lr)
    cfg.optim.schedule, cfg.optim.milestones, cfg.optim.warmup = "multistep", [50, 80], 0
    assert [lr_factor(cfg, s) for s in (49, 50, 80)] == [1.0, 0.5, 0.25]


def test_config_file_flags_and_print_config(tmp_path, images):
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\narch = "efdn"\nscale = 2\n[optim]\nlr = 0.0005\n')
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(toml),
            "--channels",
            "16",
            "--set",
            "optim.schedule=multistep",
            "--set",
            "optim.milestones=[10, 20]",
            "--print-config",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = TrainConfig.from_dict(__import__("tomllib").loads(result.output))
    assert (cfg.model.arch, cfg.model.scale, cfg.model.args["channels"], cfg.optim.lr) == ("efdn", 2, 16, 0.0005)
    assert cfg.optim.milestones == [10, 20]
    with pytest.raises(ConfigError, match="unknown setting"):
        cfg.set("optim.learning_rate", "1")
    bad = CliRunner().invoke(main, ["train", "--set", "run.stepz=3", "--print-config"])
    assert bad.exit_code == 2 and "unknown setting" in bad.output


def esr_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "esrcli", *args]


@pytest.mark.parametrize("signum,code,workers", [(signal.SIGINT, 130, 0), (signal.SIGTERM, 143, 1)], ids=["ctrl-c", "term-group"])
def test_interrupt_saves_a_checkpoint_and_resume_finishes(images, tmp_path, signum, code, workers):
    """Ctrl-C, and a SIGTERM to the whole process group (as schedulers send it), DataLoader worker included."""
    run = tmp_path / "run"
    args = [
        "train",
        "--arch",
        "span",
        "--channels",
        "8",
        "--scale",
        "2",
        "--data",
        str(images),
        "--out",
        str(run),
        "--steps",
        "100000",
        "--batch",
        "2",
        "--lr-patch",
        "12",
        "--workers",
        str(workers),
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "run.ckpt_every=0",
        "--set",
        "run.log_every=1",
    ]
    # The child starts with SIGINT ignored, as under a test runner or script that runs it in the
    # background (nohup, `&`): esr must still stop on Ctrl-C.
    proc = subprocess.Popen(
        esr_cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (
            (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3
        ):
            time.sleep(0.2)
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:  # whatever happened, nothing this test started keeps running
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    stopped = state["step"]
    assert stopped >= 3
    cfg = (run / "config.toml").read_text().replace("steps = 100000", f"steps = {stopped + 2}")
    (run / "config.toml").write_text(cfg)
    done = subprocess.run(esr_cmd("train", "--resume", str(run), "--quiet"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == stopped + 2


def run_process_group(cmd: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """Run `cmd` in its own process group and kill the whole group after it, so no rank outlives the test."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    return proc.returncode, err


def crash_lines(stderr: str) -> str:
    """The lines of a crashed child's stderr that say why (C++ terminate messages, Python errors)."""
    keys = ("terminate called", "what():", "Error", "error", "Aborted", "enforce")
    return "\n".join(line for line in stderr.splitlines() if any(k in line for k in keys))[:3000]


def test_two_process_ddp_on_cpu_keeps_ranks_identical(images, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "esrcli",
        "train",
        "--arch",
        "span",
        "--channels",
        "8",
        "--scale",
        "2",
        "--data",
        str(images),
        "--out",
        str(run),
        "--steps",
        "4",
        "--batch",
        "2",
        "--lr-patch",
        "12",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "run.log_every=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code, err = run_process_group(cmd, env)
    if code != 0 and "SIGABRT" in err:
        # Seen once in CI (1 run in many): a rank aborted inside gloo's TCP transport, the message lost with the
        # output's head. Rerun once, keeping the first crash visible; a second abort fails the test.
        warnings.warn(f"torchrun: a rank aborted, rerunning once: {crash_lines(err)}", stacklevel=1)
        shutil.rmtree(run, ignore_errors=True)
        code, err = run_process_group(cmd, env)
    assert code == 0, f"{crash_lines(err)}\n...\n{err[-1500:]}"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    sync = [r for r in records if "ranks_in_sync" in r]
    assert sync and sync[-1]["ranks_in_sync"] is True and len(set(sync[-1]["rank_digests"])) == 1 and len(sync[-1]["rank_digests"]) == 2
    assert max(r["step"] for r in records) == 4


def test_images_smaller_than_a_patch_are_left_out_or_refused_with_a_hint(images, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for src in images.iterdir():
        (mixed / src.name).write_bytes(src.read_bytes())
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(mixed / "tiny.png")
    common = ["--arch", "span", "--channels", "4", "--scale", "2", "--steps", "1", "--batch", "1", "--device", "cpu", "--quiet"]
    ok = CliRunner().invoke(main, ["train", *common, "--data", str(mixed), "--lr-patch", "12", "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert "left out 1 of 5 images smaller than an HR patch of 32 px" in ok.output
    refused = CliRunner().invoke(main, ["train", *common, "--data", str(mixed), "--lr-patch", "60", "--out", str(tmp_path / "b")])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "all 5 training images are smaller than an HR patch of 128 px" in refused.output
    assert "use --lr-patch 44 or less" in refused.output  # 96 px // 2 - 2 x 2 of context
    assert len(refused.output.strip().splitlines()) == 1


def test_init_carries_an_x4_body_into_an_x2_run(images, tmp_path):
    x4 = Trainer(config(images, **{"model.scale": 4, "model.form": "fused", "run.steps": 3}), tmp_path / "x4")
    x4.fit()
    cfg = config(images, **{"model.scale": 2, "model.form": "fused", "model.init": str(tmp_path / "x4")})
    x2 = Trainer(cfg, tmp_path / "x2")
    assert x2.left_at_init == ["upsampler.0.bias", "upsampler.0.weight"]
    source = network_from_run(tmp_path / "x4")[0].state_dict()
    for name, tensor in x2.network.state_dict().items():
        if not name.startswith("upsampler"):
            assert torch.equal(tensor, source[name].to(tensor.dtype)), name
    x2.fit()  # and it trains from there
    assert network_from_run(tmp_path / "x2")[0].scale == 2
    wrong = config(images, **{"model.arch": "efdn", "model.form": "fused", "model.init": str(tmp_path / "x4")})
    with pytest.raises(TrainingError, match="is a span model, but this run trains efdn"):
        Trainer(wrong, tmp_path / "wrong")


# --- the loop without host syncs, EMA in one call, data workers ---------------------------------


def test_ema_in_one_foreach_call_equals_the_loop_of_lerps(images, tmp_path):
    """_update_ema's torch._foreach_lerp_ gives the very bits of the per-parameter Tensor.lerp_ loop it
    replaced, frozen parameters (LoRA students) left alone, buffers copied."""
    from esrcli.train.trainer import build_network

    cfg = config(images, **{"optim.ema": 0.99})
    torch.manual_seed(cfg.run.seed)
    network = build_network(cfg)
    frozen = next(network.parameters())
    frozen.requires_grad_(False)
    trainer = Trainer(cfg, tmp_path / "run", network=network)
    lr, hr = fixed_batch(cfg, images)
    for _ in range(4):  # weights and EMA apart, as in a run; decays (1 + s) / (10 + s) up to 0.99
        before = [e.detach().clone() for e in trainer.ema.parameters()]
        decay = min(cfg.optim.ema, (1 + trainer.step) / (10 + trainer.step))
        trainer.train_step(lr, hr)  # updates the EMA with that decay
        expected = [b.lerp_(p.detach(), 1.0 - decay) if p.requires_grad else b for b, p in zip(before, trainer.network.parameters())]
        for got, want in zip(trainer.ema.parameters(), expected):
            assert torch.equal(got, want)
    assert torch.equal(next(trainer.ema.parameters()), frozen)  # the frozen tensor never moved
    for e, b in zip(trainer.ema.buffers(), trainer.network.buffers()):
        assert torch.equal(e, b)


def records_of(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_loop_reads_the_device_once_per_record_and_logs_the_window_mean(images, tmp_path, monkeypatch):
    """fit leaves losses on the device and reads them in one transfer per record; a record's loss is
    the mean over the steps since the last one, its terms the last step's, as before."""
    every_step = Trainer(config(images, **{"data.val": ""}), tmp_path / "a")
    every_step.fit()
    reads, host_numbers = [], []
    original_read = Trainer._read

    def counting_read(self, losses, parts):
        reads.append(len(losses))
        return original_read(self, losses, parts)

    def counting_float(self: torch.Tensor) -> float:  # float() of a tensor in the loop: a wait for the device every step
        host_numbers.append(tuple(self.shape))
        return self.item()

    monkeypatch.setattr(Trainer, "_read", counting_read)
    third = Trainer(config(images, **{"data.val": "", "run.log_every": 3, "run.ckpt_every": 0}), tmp_path / "b")
    monkeypatch.setattr(torch.Tensor, "__float__", counting_float)
    third.fit()
    monkeypatch.undo()
    assert reads == [3, 3] and host_numbers == []
    a, b = records_of(tmp_path / "a"), records_of(tmp_path / "b")
    assert [r["step"] for r in b] == [3, 6] and all(set(r) == set(a[0]) == {"step", "loss", "l1", "lr", "it_s"} for r in b)
    by_step = {r["step"]: r for r in a}
    for record in b:
        window = [by_step[s]["loss"] for s in range(record["step"] - 2, record["step"] + 1)]
        assert record["loss"] == pytest.approx(sum(window) / 3, rel=1e-12)
        assert record["l1"] == by_step[record["step"]]["l1"] and record["lr"] == by_step[record["step"]]["lr"]


def nan_from(step: int) -> Callable:
    """A loss hook whose term turns NaN from `step` (1-based) on: weights and gradients go NaN as in a real divergence."""
    calls = []

    def hook(lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict]:
        calls.append(1)
        return (sr.sum() * float("nan") if len(calls) >= step else sr.new_zeros(())), {}

    return hook


@pytest.mark.parametrize(
    "log_every,ckpt_every,bad,saved",
    [(3, 3, 5, 3), (4, 3, 2, None), (1, 0, 4, None)],
    ids=["found-when-logging", "found-before-a-checkpoint", "every-step"],
)
def test_a_diverging_run_stops_at_its_first_non_finite_step(images, tmp_path, log_every, ckpt_every, bad, saved):
    """The NaN check happens where the losses are read (records, validation, checkpoints): the error names
    the first bad step, and no checkpoint holds the diverged weights."""
    cfg = config(images, **{"data.val": "", "run.log_every": log_every, "run.ckpt_every": ckpt_every})
    trainer = Trainer(cfg, tmp_path / "run", loss_hook=nan_from(bad))
    with pytest.raises(TrainingError, match=rf"^step {bad}: the loss is nan; lower optim.lr"):
        trainer.fit()
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert (torch.load(checkpoint, weights_only=True)["step"] if checkpoint.exists() else None) == saved
    assert all(r["step"] < bad and math.isfinite(r["loss"]) for r in records_of(tmp_path / "run"))
    stepped = Trainer(cfg, tmp_path / "by-hand", loss_hook=nan_from(1))  # train_step still refuses before the update
    weights = [p.detach().clone() for p in stepped.network.parameters()]
    lr, hr = fixed_batch(cfg, images)
    with pytest.raises(TrainingError, match="^step 1: the loss is nan"):
        stepped.train_step(lr, hr)
    assert all(torch.equal(p, w) for p, w in zip(stepped.network.parameters(), weights))


def test_data_workers_auto_takes_the_free_cores_and_is_shown(images, tmp_path, monkeypatch):
    from esrcli.train import data

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    monkeypatch.setattr(data, "usable_cores", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert [data.resolve_workers("auto", cpu), data.resolve_workers("auto", cuda), data.resolve_workers(3, cuda)] == [12, 15, 3]
    assert [data.resolve_workers("auto", cpu, local_world=2), data.resolve_workers("auto", cuda, local_world=2)] == [4, 7]
    monkeypatch.setattr(data, "usable_cores", lambda: 4)
    assert [data.resolve_workers("auto", cpu), data.resolve_workers("auto", cuda, local_world=8)] == [0, 1]
    assert data.resolve_workers("auto", cpu, degraded=True) == 1  # a degradation preset: one worker overlaps it with the step
    monkeypatch.setattr(data, "usable_cores", lambda: 256)
    assert data.resolve_workers("auto", cuda) == data.MAX_AUTO_WORKERS
    monkeypatch.setattr(data.multiprocessing, "get_start_method", lambda allow_none: "spawn")  # macOS: a copy of the images each
    assert data.resolve_workers("auto", torch.device("mps")) == data.MAX_AUTO_WORKERS_UNFORKED
    monkeypatch.undo()

    cfg = TrainConfig()
    assert cfg.data.workers == "auto" and 'workers = "auto"' in cfg.to_toml()
    for value, expected in (("2", 2), ("auto", "auto"), (1, 1), (2.0, 2)):
        cfg.set("data.workers", value)
        assert cfg.data.workers == expected
    for bad in (-1, "many", True, 1.5):
        cfg.set("data.workers", bad)
        with pytest.raises(ConfigError, match="'data.workers' must be 0 or more, or auto"):
            cfg.validate()

    pinned = []
    original = __import__("esrcli.train.trainer", fromlist=["make_loader"]).make_loader
    monkeypatch.setattr("esrcli.train.trainer.make_loader", lambda *a, **k: pinned.append(k["pin_memory"]) or original(*a, **k))
    run = tmp_path / "run"
    common = ["train", "--arch", "span", "--channels", "4", "--scale", "2", "--steps", "2", "--batch", "2", "--lr-patch", "12"]
    result = CliRunner().invoke(main, [*common, "--data", str(images), "--device", "cpu", "--out", str(run)])
    assert result.exit_code == 0, result.output
    expected = max(0, min(data.MAX_AUTO_WORKERS, data.usable_cores() - torch.get_num_threads()))
    assert f"{expected} data worker(s) (auto)" in result.output and pinned == [False]  # pinned memory only for CUDA
    assert 'workers = "auto"' in (run / "config.toml").read_text()  # resolved again where the run resumes
    printed = CliRunner().invoke(main, [*common, "--workers", "auto", "--set", "data.workers=3", "--print-config"])
    assert printed.exit_code == 0 and "workers = 3" in printed.output
    refused = CliRunner().invoke(main, [*common, "--workers", "some", "--print-config"])
    assert refused.exit_code == 2 and "neither a whole number nor auto" in refused.output


def test_a_gpu_starved_by_its_degradations_is_warned_about():
    from esrcli.train.data import starvation_warning

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    message = starvation_warning("realesrgan", 2, 16, 48, 4, cuda)
    assert message is not None and "\n" not in message
    assert "~14 CPU-ms per 208 px sample: 2 data worker(s) make ~143 samples/s, 8.9 steps/s at batch 16" in message
    assert "likely fewer than cuda trains" in message and "at least 3" in message
    assert "the training process itself" in starvation_warning("light", 0, 64, 64, 4, cuda)
    assert starvation_warning("realesrgan", 2, 16, 48, 4, cpu) is None  # on the CPU the data and the network share the cores
    assert starvation_warning("realesrgan", 15, 16, 48, 4, cuda) is None
    assert starvation_warning("none", 0, 16, 48, 4, cuda) is None


# --- distill.teacher: a stronger network labels the training images once -------------------------


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    from esrcli.archs import build
    from esrcli.weights import save_network

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher-x2.safetensors"
    save_network(build("span", channels=12, scale=2).eval(), path)
    return path


def test_teacher_labels_are_its_output_on_the_whole_bicubic_lr(images, teacher_file):
    from esrcli.imresize import imresize
    from esrcli.train.data import load_sources
    from esrcli.train.distill import label_with_teacher, load_teacher

    sources = load_sources([str(images)], 2)
    teacher = load_teacher(str(teacher_file), 2, torch.device("cpu"))
    labelled = label_with_teacher(sources, 2, teacher, torch.device("cpu"))
    for before, after in zip(sources, labelled):
        assert after.hr.shape == before.hr.shape and after.teacher.shape == after.hr.shape and after.teacher.dtype == np.uint8
        hr = torch.from_numpy(before.hr).permute(2, 0, 1).double() / 255
        lr = (imresize(hr, scale=0.5) * 255).round().clamp(0, 255)
        assert torch.equal(torch.from_numpy(after.lr).permute(2, 0, 1).double(), lr)
        with torch.no_grad():
            sr = load_network(teacher_file)(lr[None].float() / 255).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(after.teacher.astype(np.float64) - sr).max() <= 0.5 + 1e-3  # rounded, nothing else


def test_teacher_patches_are_cut_where_the_hr_patches_are(images):
    from dataclasses import replace

    from esrcli.train.data import load_sources

    def blockmax(hr: np.ndarray) -> np.ndarray:  # an LR that turns and flips with its HR
        h, w = hr.shape[0] // 2, hr.shape[1] // 2
        return hr[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).max(axis=(1, 3))

    sources = [replace(s, lr=blockmax(s.hr), teacher=255 - s.hr) for s in load_sources([str(images)], 2)]
    dataset = PatchDataset(sources, 2, 12, seed=4)
    for i in range(8):
        lr, hr, teacher = dataset[i]
        assert lr.shape == (3, 12, 12) and hr.shape == teacher.shape == (3, 24, 24)
        assert torch.allclose(teacher, 1 - hr, atol=1e-6)  # same place, same turn and flip
        assert torch.equal(lr, torch.nn.functional.max_pool2d(hr[None], 2)[0])


def test_a_teacher_alone_pulls_the_network_towards_its_output(images, tmp_path, teacher_file):
    from esrcli.train.data import load_sources
    from esrcli.train.distill import label_with_teacher, load_teacher

    cfg = config(images, **{"distill.teacher": str(teacher_file), "loss.l1": 0.0, "run.steps": 40, "run.ckpt_every": 0, "optim.ema": 0.0})
    trainer = Trainer(cfg, tmp_path / "run")
    sources = label_with_teacher(
        load_sources([str(images)], 2), 2, load_teacher(str(teacher_file), 2, torch.device("cpu")), torch.device("cpu")
    )
    batch = [PatchDataset(sources, 2, 12, seed=9)[i] for i in range(4)]
    lr, teacher = torch.stack([b[0] for b in batch]), torch.stack([b[2] for b in batch])

    def gap() -> float:
        with torch.no_grad():
            return float((trainer.network.eval()(lr) - teacher).abs().mean())

    before = gap()
    trainer.fit()
    records = records_of(tmp_path / "run")
    assert all("teacher" in r and "l1" not in r for r in records if "loss" in r)
    assert gap() < 0.7 * before


def test_a_teacher_is_refused_where_it_cannot_label(images, tmp_path, teacher_file):
    with pytest.raises(ConfigError, match="distill.teacher .* random degradations"):
        config(images, **{"distill.teacher": str(teacher_file), "degradation.preset": "jpeg"}).validate()
    with pytest.raises(ConfigError, match="lora.teacher"):
        config(images, **{"distill.teacher": str(teacher_file), "lora.student": str(teacher_file)}).validate()
    with pytest.raises(TrainingError, match="x2 but the run is x4"):
        Trainer(config(images, **{"distill.teacher": str(teacher_file), "model.scale": 4}), tmp_path / "run")


# --- model.init from a wider model of the same architecture: narrowed ------------------------------


def padded_with_dead_channels(small, wide_channels: int, seed: int = 0):
    """A wider SPAN computing exactly what `small` computes: its channels at scattered places in every
    channel set, the other channels written as zeros (and read with arbitrary weights)."""
    from esrcli.archs import build

    g = torch.Generator().manual_seed(seed)
    wide = build("span", channels=wide_channels, scale=small.scale, norm=True, form="fused").eval()
    w_sets = wide.channel_sets()
    places = {name: torch.randperm(wide_channels, generator=g)[: small.config["channels"]].sort().values for name in w_sets}
    sd = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in wide.state_dict().items()}
    for channels in w_sets.values():  # dead rows first, then the live ones from small
        for writer in channels.writers:
            sd[f"{writer}.weight"][:] = 0
            sd[f"{writer}.bias"][:] = 0
    rows = {w: places[name] for name, s in w_sets.items() for w in s.writers}
    cols: dict[str, list] = {}
    for name, channels in w_sets.items():
        for reader, offset in channels.readers:
            cols.setdefault(reader, []).append((offset, places[name] + offset))
    for key, value in small.state_dict().items():
        conv = key.rsplit(".", 1)[0]
        r = rows.get(conv, torch.arange(value.shape[0]))
        if key.endswith("bias"):
            sd[key][r] = value
            continue
        c = torch.cat([i for _, i in sorted(cols[conv], key=lambda p: p[0])]) if conv in cols else torch.arange(value.shape[1])
        sd[key][r.view(-1, 1), c] = value
    wide.load_state_dict(sd)
    return wide


def test_narrowing_finds_the_channels_that_carry_the_output():
    from esrcli.archs import build
    from esrcli.train.narrow import can_narrow, narrowed_weights

    torch.manual_seed(3)
    small = build("span", channels=8, scale=2, norm=True, form="fused").eval()
    wide = padded_with_dead_channels(small, 12)
    lr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(wide(lr), small(lr), atol=1e-5)
        target = build("span", channels=8, scale=2, norm=True, form="fused").eval()
        assert can_narrow(wide, target) and not can_narrow(target, wide) and not can_narrow(small, target)
        target.load_state_dict(narrowed_weights(wide, target, lr))
        assert torch.allclose(target(lr), small(lr), atol=1e-5)
        other = torch.rand(1, 3, 20, 24)  # not the patches it was judged on
        assert torch.allclose(target(other), small(other), atol=1e-5)


def test_init_from_a_wider_model_narrows_it_and_says_so(images, tmp_path):
    from esrcli.archs import build
    from esrcli.weights import save_network

    torch.manual_seed(4)
    save_network(
        padded_with_dead_channels(build("span", channels=8, scale=2, norm=True, form="fused").eval(), 10), tmp_path / "wide.safetensors"
    )
    cfg = config(images, **{"model.form": "fused", "model.init": str(tmp_path / "wide.safetensors"), "run.steps": 1})
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.narrowed_init == "narrowed from 10 to 8 channels" and trainer.left_at_init == []


def test_graphics_pictures_are_flat_saturated_and_a_function_of_the_seed(images, tmp_path):
    from esrcli.train.graphics import graphics_images

    first, again, other = graphics_images(6, seed=1), graphics_images(6, seed=1), graphics_images(6, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again)) and not all(np.array_equal(a, b) for a, b in zip(first, other))
    for picture in first:
        assert picture.shape == (384, 384, 3) and picture.dtype == np.uint8
        _, counts = np.unique(picture.reshape(-1, 3), axis=0, return_counts=True)
        assert np.sort(counts)[-8:].sum() > 0.9 * 384 * 384  # flat fields (text edges are smoothed), not texture
        assert counts.max() > 0.2 * 384 * 384  # one large field
    saturated = np.mean([((p == 0) | (p == 255)).any(axis=2).mean() for p in first])
    assert saturated > 0.3
    events = []
    cfg = config(images, **{"data.graphics": 3, "run.steps": 1})
    Trainer(cfg, tmp_path / "run").fit(events.append)
    assert events[0]["images"] == 4 + 3
