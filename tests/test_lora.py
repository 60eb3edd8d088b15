"""ConvLoRA and DSCLoRA finetuning: exact at step 0, only adapters train, merges exactly, distils across widths."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from esrcli.archs import build, fused_state_dict
from esrcli.cli import main
from esrcli.lora import DSCLORA_GROUPS, ConvLoRA, add_lora, affinity_loss, count, lora_parameters, taps
from esrcli.runconfig import TrainConfig
from esrcli.train.export import export_run
from esrcli.train.losses import trim
from esrcli.train.trainer import Trainer, TrainingError
from esrcli.weights import load_network, save_network


def student(channels: int = 26) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("span", channels=channels, scale=4).eval()


def with_random_b(network: torch.nn.Module) -> torch.nn.Module:
    """Give every adapter a non-zero B, as training would, so merges are really tested."""
    torch.manual_seed(1)
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, ConvLoRA):
                m.lora_B.normal_(0, 0.01)
    return network


def test_dsclora_placement_trains_25920_parameters_for_span_tiny():
    net = student(26)
    wrapped = add_lora(net, DSCLORA_GROUPS)
    assert len(wrapped) == 18 + 2 and "conv_1.eval_conv" not in wrapped and "conv_cat" not in wrapped
    trainable, total = count(net)
    assert trainable == 25_920 == sum(p.numel() for p in lora_parameters(net))
    layer = net.block_1.c1_r.eval_conv
    assert layer.lora_A.shape == (2 * 3, 26 * 3) and layer.lora_B.shape == (26 * 3, 2 * 3) and layer.scaling == 2.0


def test_at_step_zero_the_student_is_unchanged():
    base = student()
    net = student()
    add_lora(net)
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(net(x), base(x))


def test_only_the_lora_factors_get_gradients():
    net = with_random_b(student())
    add_lora(net)
    with_random_b(net)
    net(torch.rand(2, 3, 12, 12)).abs().mean().backward()
    for name, p in net.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and not p.requires_grad, name


def test_merge_is_exact_and_keeps_the_students_keys(tmp_path):
    base = student()
    net = student()
    add_lora(net)
    with_random_b(net)
    merged_sd = fused_state_dict(net)
    assert set(merged_sd) == set(base.state_dict())
    merged = build("span", channels=26, scale=4)
    merged.load_state_dict(merged_sd, strict=True)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base.parameters())
    x = torch.rand(1, 3, 24, 18)
    with torch.no_grad():
        a, b = net(x), merged.eval()(x)
    assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())
    assert (a - base(x)).abs().max() > 1e-3  # the adapters did change the network


def test_affinity_loss_properties():
    f = torch.rand(2, 26, 9, 11)
    assert float(affinity_loss(f, f)) == 0.0
    assert float(affinity_loss(f, 3.0 * f)) < 1e-6  # scale-free per pixel
    wide = torch.rand(2, 32, 9, 11)
    loss = affinity_loss(f, wide)
    assert torch.isfinite(loss) and loss > 0  # works across channel widths
    assert torch.allclose(affinity_loss(f, wide, chunk=7), loss, rtol=1e-5)  # chunking changes nothing
    g = torch.rand(2, 26, 9, 11, requires_grad=True)
    affinity_loss(g, wide).backward()
    assert g.grad is not None and g.grad.abs().sum() > 0


def test_finetune_with_a_wider_teacher_exports_a_plain_student(images, tmp_path):
    torch.manual_seed(0)
    save_network(build("span", channels=12, scale=2).eval(), tmp_path / "teacher.safetensors")
    save_network(build("span", channels=8, scale=2).eval(), tmp_path / "student.safetensors")
    result = CliRunner().invoke(
        main,
        [
            "finetune-lora",
            "--teacher",
            str(tmp_path / "teacher.safetensors"),
            "--student",
            str(tmp_path / "student.safetensors"),
            "--data",
            str(images),
            "--val",
            str(images),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "4",
            "--batch",
            "2",
            "--lr-patch",
            "24",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--quiet",
            "--set",
            "run.log_every=1",
        ],
    )
    assert result.exit_code == 0, result.output
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"teacher"' in records and '"affinity"' in records
    out = export_run(tmp_path / "run", tmp_path / "merged.safetensors")
    merged = load_network(out)
    plain = load_network(tmp_path / "student.safetensors")
    assert set(merged.state_dict()) == set(plain.state_dict()) and merged.config == plain.config
    from esrcli.runs import network_from_run

    fused, cfg, step = network_from_run(tmp_path / "run")
    assert step == 4 and cfg.model.scale == 2
    x = torch.rand(1, 3, 10, 12)
    assert torch.allclose(fused(x), merged(x), atol=1e-6)
    up = CliRunner().invoke(main, ["upscale", str(images / "img0.png"), "-m", str(out), "-o", str(tmp_path / "up.png")])
    assert up.exit_code == 0, up.output
    # --strength s merges W + s * dW: 0 is the student itself, 0.5 the weight-space midpoint.
    for s in ("0", "0.5"):
        r = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--out", str(tmp_path / f"s{s}.safetensors"), "--strength", s])
        assert r.exit_code == 0, r.output
    zero, half, full = (load_network(tmp_path / f).state_dict() for f in ("s0.safetensors", "s0.5.safetensors", "merged.safetensors"))
    assert all(torch.equal(zero[k], v) for k, v in plain.state_dict().items())
    assert all(torch.allclose(half[k], (zero[k] + full[k]) / 2, atol=1e-7) for k in zero)
    changed = [k for k in zero if not torch.equal(zero[k], full[k])]
    assert changed and all(k.endswith("weight") for k in changed)  # adapters touch weights only, never biases


def test_pure_distillation_needs_no_hr_term_but_some_term(images, tmp_path):
    """loss.l1 = 0 is DSCLoRA supervised by the teacher alone; with every term at zero the run is refused."""
    save_network(build("span", channels=8, scale=2).eval(), tmp_path / "s.safetensors")
    cfg = TrainConfig()
    for key, value in {
        "lora.student": str(tmp_path / "s.safetensors"),
        "lora.teacher": str(tmp_path / "s.safetensors"),
        "run.steps": 2,
        "data.lr_patch": 16,
        "data.batch": 2,
        "data.workers": 0,
        "run.device": "cpu",
        "loss.l1": 0.0,
    }.items():
        cfg.set(key, value)
    cfg.data.train = [str(images)]
    Trainer(cfg, tmp_path / "run").fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert records and "l1" not in records[-1] and "teacher" in records[-1]
    cfg.set("lora.teacher_weight", 0.0)
    cfg.set("lora.affinity_weight", 0.0)
    with pytest.raises(TrainingError, match="every loss weight is zero"):
        Trainer(cfg, tmp_path / "none")


def test_a_lora_run_resumes(images, tmp_path):
    torch.manual_seed(0)
    save_network(build("span", channels=8, scale=2).eval(), tmp_path / "s.safetensors")
    cfg = TrainConfig()
    for key, value in {
        "lora.student": str(tmp_path / "s.safetensors"),
        "lora.teacher": str(tmp_path / "s.safetensors"),
        "run.steps": 2,
        "data.lr_patch": 16,
        "data.batch": 2,
        "data.workers": 0,
        "run.device": "cpu",
    }.items():
        cfg.set(key, value)
    cfg.data.train = [str(images)]
    Trainer(cfg, tmp_path / "run").fit()
    cfg.set("run.steps", 3)
    resumed = Trainer(cfg, tmp_path / "run", resume=True)
    assert resumed.step == 2
    resumed.fit()
    assert resumed.step == 3


def test_distillation_leaves_the_patch_border_out_of_both_teacher_terms(images, tmp_path):
    """With loss.border the teacher L1 and the affinities are taken on the patch's interior only:
    near a cut edge both networks see zero padding that a whole image does not have there."""
    torch.manual_seed(0)
    save_network(build("span", channels=12, scale=2).eval(), tmp_path / "t.safetensors")
    save_network(build("span", channels=8, scale=2).eval(), tmp_path / "s.safetensors")
    cfg = TrainConfig()
    for key, value in {
        "lora.student": str(tmp_path / "s.safetensors"),
        "lora.teacher": str(tmp_path / "t.safetensors"),
        "loss.border": 4,
        "data.lr_patch": 16,
        "data.batch": 2,
        "data.workers": 0,
        "run.device": "cpu",
        "run.channels_last": False,
    }.items():
        cfg.set(key, value)
    cfg.data.train = [str(images)]
    trainer = Trainer(cfg, tmp_path / "run")
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, parts = trainer._forward_loss(lr, hr)
        teacher, student = load_network(tmp_path / "t.safetensors").eval(), load_network(tmp_path / "s.safetensors").eval()
        with taps(student, cfg.lora.taps) as fs, taps(teacher, cfg.lora.taps) as ft:
            sr_s, sr_t = student(lr), teacher(lr)
        inner = float(torch.nn.functional.l1_loss(trim(sr_s, 8), trim(sr_t, 8)))
        whole = float(torch.nn.functional.l1_loss(sr_s, sr_t))
        aff_inner = sum(float(affinity_loss(trim(fs[n], 4), trim(ft[n], 4))) for n in fs)
        aff_whole = sum(float(affinity_loss(fs[n], ft[n])) for n in fs)
    assert len(fs) == 9 and abs(whole - inner) > 1e-4 and abs(aff_whole - aff_inner) > 1e-3  # the border matters here
    assert parts["teacher"] == pytest.approx(inner, rel=1e-5)
    assert parts["affinity"] == pytest.approx(cfg.lora.affinity_weight * aff_inner, rel=1e-4)


@pytest.mark.parametrize("legacy", [False, True], ids=["described", "older-checkpoint"])
def test_a_lora_run_loads_without_its_student_file(images, tmp_path, legacy):
    """The checkpoint holds every student weight: loading the run needs neither the trainer nor the
    student's file (a registry student need not be downloadable). Older checkpoints without the
    network description are rebuilt by detecting the student's architecture from its weights."""
    from esrcli.loading import load_reference
    from esrcli.runs import network_from_run

    torch.manual_seed(0)
    save_network(build("span", channels=8, scale=2).eval(), tmp_path / "s.safetensors")
    cfg = TrainConfig()
    for key, value in {
        "lora.student": str(tmp_path / "s.safetensors"),
        "lora.teacher": str(tmp_path / "s.safetensors"),
        "run.steps": 2,
        "data.lr_patch": 16,
        "data.batch": 2,
        "data.workers": 0,
        "run.device": "cpu",
        "optim.lr": 1e-2,
    }.items():
        cfg.set(key, value)
    cfg.data.train = [str(images)]
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    expected, _, _ = network_from_run(tmp_path / "run")
    (tmp_path / "s.safetensors").unlink()
    if legacy:
        state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        del state["network"]
        torch.save(state, tmp_path / "run" / "checkpoint.pt")
    loaded = load_reference(str(tmp_path / "run")).network
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected(x), atol=1e-4)  # load_reference also picks channels_last
    assert loaded.form == "fused" and not any("lora" in k for k in loaded.state_dict())
