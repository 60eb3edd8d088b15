"""The bad-input matrix: every input and flag that once printed a traceback, hung or lost data.

Each case runs the real command and expects one line that names the problem, a non-zero exit code
and nothing written; none may reach the CLI's last-resort "unexpected ..." line, which would mean
the case is not handled where it arises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli as esr
from PIL import Image

from esrcli.archs import build
from esrcli.video import FFMPEG
from esrcli.weights import save_network


def refused(result, *phrases: str) -> None:
    text = result.output
    assert result.exit_code not in (0, None), text
    assert "Traceback" not in text and "unexpected" not in text, text
    lines = [line for line in text.strip().splitlines() if line.startswith("esr: error") or "Error:" in line]
    assert len(lines) == 1, text
    for phrase in phrases:
        assert phrase in text, (phrase, text)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / "a.png")
    torch.manual_seed(0)
    good = build("span", channels=4, scale=2, norm=False).eval()
    save_network(good, d / "x2.safetensors")
    save_network(build("span", channels=4, scale=4, norm=False).eval(), d / "x4.safetensors")
    sd = good.state_dict()
    torch.save({k: v * float("nan") for k, v in sd.items()}, d / "nan.pth")
    torch.save({**sd, "upsampler.0.weight": sd["upsampler.0.weight"][:11]}, d / "cut.pth")
    (d / "notes.txt").write_text("just text")
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in sd.items()}, str(d / "badmeta.safetensors"), metadata={"esr.arch": "span", "esr.config": "{not json"}
    )
    save_file(
        {k: v.contiguous() for k, v in sd.items()}, str(d / "listmeta.safetensors"), metadata={"esr.arch": "span", "esr.config": "[1, 2]"}
    )
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(d / "negative.safetensors"),
        metadata={"esr.arch": "span", "esr.config": '{"channels": -1, "scale": 2}'},
    )
    return d


# --- models and weights ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights,phrase",
    [
        ("nan.pth", "NaN or infinite"),
        ("cut.pth", "look like span weights"),
        ("notes.txt", "not a weight file"),
        ("badmeta.safetensors", "esr.config metadata"),
        ("listmeta.safetensors", "esr.config metadata"),
        ("negative.safetensors", "cannot build span"),
    ],
)
def test_odd_weight_files(files, weights, phrase):
    refused(esr("upscale", str(files / "a.png"), "-m", str(files / weights), "-o", str(files / "never.png")), weights, phrase)
    assert not (files / "never.png").exists()


def test_empty_names_are_not_the_current_folder(files, monkeypatch):
    monkeypatch.chdir(files)
    refused(esr("upscale", ""), "empty input name")
    refused(esr("upscale", "a.png", "-m", ""), "empty model name")
    assert sorted(p.name for p in files.glob("*_x*")) == []


@pytest.mark.parametrize(
    "toml,phrase",
    [
        (
            '[m]\ntitle="t"\narch="span"\nlicence="MIT"\n[[m.weights]]\nscale="abc"\nsha256="'
            + "0" * 64
            + '"\nsources=[{url="https://x/y.pth"}]\n',
            "malformed",
        ),
        ("x = 5\n", "must be a table"),
        ('[m]\ntitle="t"\narch="span"\nlicence="MIT"\nweights=[]\n', "has no"),
        ('[m]\ntitle="t"\narch="span"\nlicence="MIT"\n[[m.weights]]\nscale=4\nsha256=5\nsources=[{url="https://x/y.pth"}]\n', "malformed"),
        (b"\xff\xfe[m]", "cannot read the model registry"),
    ],
)
def test_a_malformed_registry_file(tmp_path, toml, phrase):
    from esrcli.registry import default_registry

    path = tmp_path / "models.toml"
    path.write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    default_registry.cache_clear()
    try:
        refused(esr("models", "list", env={"ESR_MODELS_TOML": str(path)}), phrase)
    finally:
        default_registry.cache_clear()


def test_a_cache_folder_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(esr("models", "info", "span", env={"ESR_CACHE": str(blocker / "cache")}), "cannot use this cache folder", "ESR_CACHE")


# --- training, finetuning, export --------------------------------------------------------------


TRAIN = [
    "--arch",
    "span",
    "--channels",
    "4",
    "--scale",
    "2",
    "--steps",
    "1",
    "--batch",
    "1",
    "--lr-patch",
    "8",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.mark.parametrize(
    "extra,phrase",
    [
        (["--batch", "0"], "'data.batch' must be a positive integer"),
        (["--lr", "0"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--workers", "-1"], "'data.workers' must be 0 or more"),
        (["--channels", "0"], "'model.args.channels' must be a positive integer"),
        (["--scale", "0"], "'model.scale' must be an integer from 2 to 8"),
        (["--seed", "-1"], "'run.seed'"),
        (["--set", "run.log_every=0"], "'run.log_every'"),
        (["--set", "optim.weight_decay=-1"], "'optim.weight_decay'"),
        (["--set", "optim.betas=[1, 2, 3]"], "'optim.betas'"),
        (["--set", "model.form=bogus"], "'model.form'"),
        (["--set", "model.args=5"], "expects a table"),
        (["--set", "lora.affinity_chunk=0"], "'lora.affinity_chunk'"),
        (["--set", "degradation.preset=heavy"], "unknown degradation preset"),
    ],
)
def test_training_settings_out_of_range(images, tmp_path, extra, phrase):
    result = esr("train", *TRAIN, "--data", str(images), "--out", str(tmp_path / "run"), *extra)
    refused(result, phrase)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_training_data_and_config_problems(images, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(esr("train", *TRAIN, "--data", str(empty), "--out", str(tmp_path / "a")), "no training images")
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\ntrain = "{images}"\n')
    refused(esr("train", *TRAIN, "--config", str(config), "--out", str(tmp_path / "b")), "'data.train' expects a list")
    config.write_text("model = 5\n")
    refused(esr("train", *TRAIN, "--config", str(config), "--out", str(tmp_path / "c")), "[model] must be a table")
    tiny_val = tmp_path / "val"
    tiny_val.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny_val / "t.png")
    refused(esr("train", *TRAIN, "--data", str(images), "--val", str(tiny_val), "--out", str(tmp_path / "d")), "too small to score")


@pytest.mark.parametrize("content", [b"", b"garbage bytes", "dict"])
def test_resuming_a_damaged_checkpoint(images, tmp_path, content):
    run = tmp_path / "run"
    assert esr("train", *TRAIN, "--data", str(images), "--out", str(run)).exit_code == 0
    if content == "dict":
        torch.save({"a": 1}, run / "checkpoint.pt")
    else:
        (run / "checkpoint.pt").write_bytes(content)
    refused(esr("train", "--resume", str(run), "--quiet"), "checkpoint.pt")


def test_finetune_with_mismatched_models_and_bad_lora_settings(files, images, tmp_path):
    common = [
        "finetune-lora",
        "--data",
        str(images),
        "--steps",
        "1",
        "--lr-patch",
        "12",
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "loss.border=2",
    ]
    refused(
        esr(*common, "--teacher", str(files / "x2.safetensors"), "--student", str(files / "x4.safetensors"), "--out", str(tmp_path / "a")),
        "is x2 but the student is x4",
    )
    pair = ["--teacher", str(files / "x2.safetensors"), "--student", str(files / "x2.safetensors")]
    refused(esr(*common, *pair, "--set", "lora.groups=5", "--out", str(tmp_path / "b")), "'lora.groups' expects a list")
    refused(esr(*common, *pair, "--set", "lora.groups=[{pattern='*', rank=0, alpha=1}]", "--out", str(tmp_path / "c")), "'lora.groups'")
    refused(esr(*common, *pair, "--set", "lora.taps=['nothing']", "--out", str(tmp_path / "d")), "matches lora.taps")


def test_export_never_overwrites_silently(images, tmp_path):
    run = tmp_path / "run"
    assert esr("train", *TRAIN, "--data", str(images), "--out", str(run)).exit_code == 0
    before = (run / "checkpoint.pt").read_bytes()
    refused(esr("export", str(run), "--out", str(run / "checkpoint.pt")), "never overwrites an input")
    (tmp_path / "keep.safetensors").write_text("precious")
    refused(esr("export", str(run), "--out", str(tmp_path / "keep.safetensors")), "already exists", "--overwrite")
    assert (tmp_path / "keep.safetensors").read_text() == "precious" and (run / "checkpoint.pt").read_bytes() == before
    refused(esr("export", str(run), "--out", str(tmp_path / "w.bin")), "name the file .safetensors")
    refused(esr("export", str(run), "--out", str(tmp_path / "x.safetensors"), "--strength", "nan"), "finite")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    refused(esr("export", str(run), "--out", str(blocker / "e.safetensors")), "cannot write")
    assert esr("export", str(run), "--out", str(tmp_path / "keep.safetensors"), "--overwrite").exit_code == 0


# --- bench ---------------------------------------------------------------------------------------


def test_bench_sizes_and_flags(files, tmp_path):
    small = tmp_path / "set"
    small.mkdir()
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(small / "dot.png")
    refused(esr("bench", "quality", "-m", "bicubic", "--data", str(small)), "dot.png", "too small")
    refused(esr("bench", "quality", "-m", "bicubic", "--data", str(files), "-s", "1"), "--scale")
    refused(esr("bench", "quality", "-m", "bicubic", "--data", str(files), "--crop", "-1"), "--crop")
    refused(esr("bench", "quality", "-m", str(files / "x2.safetensors"), "--data", str(files), "-s", "4"), "has no x4 weights")
    refused(esr("bench", "speed", "-m", str(files / "x2.safetensors"), "--seconds", "nan"), "finite")
    refused(esr("bench", "speed", "-m", str(files / "x2.safetensors"), "--size", "99999999x99999999"), "WIDTHxHEIGHT")


# --- video ---------------------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    src = ["-f", "lavfi", "-i", "testsrc=size=32x24:rate=5"]
    ffmpeg(*src, "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "one.mp4"))
    ffmpeg(*src, "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "in.avi"))
    ffmpeg(*src, "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-colorspace", "bt470bg", str(d / "tagged.mkv"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=4x2:rate=5", "-t", "1", "-c:v", "ffv1", str(d / "tiny.mkv"))
    (d / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:00,500\nhello\n")
    ffmpeg(
        *src,
        "-i",
        str(d / "subs.srt"),
        "-t",
        "1",
        "-map",
        "0",
        "-map",
        "1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:s",
        "srt",
        str(d / "subs.mkv"),
    )
    return d


def video(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A real process with a deadline: a hang fails the test instead of the suite."""
    return subprocess.run(
        [sys.executable, "-m", "esrcli", "video", *args, "--quiet", "--device", "cpu"], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "extra,phrase", [(["--codec", "bogus"], "bogus"), (["--pix-fmt", "bogus"], "bogus"), (["--ffmpeg-arg=-bogus"], "bogus")]
)
def test_a_failing_encoder_on_a_short_clip_fails_at_once(clips, tiny_model, tmp_path, extra, phrase):
    out = tmp_path / "o.mp4"
    proc = video(str(clips / "one.mp4"), str(out), "-m", tiny_model, *extra, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and phrase in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == []


def test_inputs_that_used_to_crash_or_be_refused(clips, tiny_model, tmp_path):
    for name in ("in.avi", "tagged.mkv", "tiny.mkv"):
        out = tmp_path / f"{name}.mkv"
        proc = video(str(clips / name), str(out), "-m", tiny_model, "--pix-fmt", "yuv444p")
        assert proc.returncode == 0, (name, proc.stderr)
        frames = subprocess.run(
            [FFMPEG, "-i", str(out), "-map", "0:v", "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True
        )
        assert sum(1 for line in frames.stdout.splitlines() if line and not line.startswith("#")) == 5
    out = tmp_path / "subs.mp4"
    proc = video(str(clips / "subs.mkv"), str(out), "-m", tiny_model)
    assert proc.returncode == 0, proc.stderr
    streams = subprocess.run([FFMPEG, "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "Subtitle: mov_text" in streams  # SRT kept, converted to what MP4 holds


def test_outputs_that_cannot_work_are_refused_before_any_frame(clips, tiny_model, tmp_path):
    for dst, phrase in ((tmp_path / "out.xyz", "out.xyz"), (tmp_path / "noext", "has no suffix"), (tmp_path / "folder.mp4", "is a folder")):
        if dst.name == "folder.mp4":
            dst.mkdir()
        proc = video(str(clips / "in.avi"), str(dst), "-m", tiny_model, "--overwrite")
        assert proc.returncode == 1 and phrase in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not list(tmp_path.glob(".*esr-parts"))
    proc = video(str(clips / "in.avi"), str(tmp_path / "o.mkv"), "-m", tiny_model, "--segment", "nan")
    assert proc.returncode == 2 and "finite" in proc.stderr


def test_a_damaged_manifest_is_named_and_overwrite_starts_over(clips, tiny_model, tmp_path):
    out = tmp_path / "o.mkv"
    parts = tmp_path / ".o.mkv.esr-parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"key": "k", "segment_frames": 5, "segments": [{"file": "x", "frames": "5"}]}))
    proc = video(str(clips / "in.avi"), str(out), "-m", tiny_model, "--resume")
    assert proc.returncode == 1 and "damaged" in proc.stderr and "--overwrite" in proc.stderr
    assert video(str(clips / "in.avi"), str(out), "-m", tiny_model, "--overwrite").returncode == 0 and out.is_file()


# --- the second new-user run (issue 20) --------------------------------------------------------


def test_a_suffix_may_not_name_a_folder(files, tmp_path):
    src = tmp_path / "good.png"
    src.write_bytes((files / "a.png").read_bytes())
    for suffix, phrase in (("/../../evil", "path separator"), ("..", "'..'"), ("_a\\b", "path separator")):
        result = esr("upscale", str(src), "--suffix", suffix, "-o", str(tmp_path / "o" / "suf") + "/", "--device", "cpu")
        refused(result, "--suffix", phrase)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["good.png"]  # nothing written, not even a folder
    from esrcli.batch import plan_batch
    from esrcli.errors import EsrError

    with pytest.raises(EsrError, match="path separator"):
        plan_batch([str(src)], out=None, recursive=False, suffix="/x", fmt="same")


def test_a_mirrored_glob_may_not_climb_out_of_the_output_folder(files, tmp_path, monkeypatch):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "top.png").write_bytes((files / "a.png").read_bytes())
    (tmp_path / "src" / "a" / "in.png").write_bytes((files / "a.png").read_bytes())
    monkeypatch.chdir(tmp_path)
    result = esr("upscale", "src/*/../../*.png", "src/a/*.png", "-r", "-o", "out/", "--device", "cpu", "--quiet")
    assert result.exit_code == 1 and "would be outside out" in result.output, result.output
    assert (tmp_path / "out" / "in_x4.png").is_file()  # the others go on
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src", "top.png"]


def test_published_weight_names_cannot_name_a_folder(files, tmp_path):
    model = tmp_path / "we..ird name.safetensors"
    model.write_bytes((files / "x2.safetensors").read_bytes())
    result = esr("export", str(model), "--to-folder", str(tmp_path / "card"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == ["README.md", "we-ird-name-x2.safetensors"]


def test_tiny_tiles_are_refused_at_once(files, tmp_path):
    for tile in ("1", "31"):
        result = esr("upscale", str(files / "a.png"), "--tile", tile, "-o", str(tmp_path / "t.png"), "--device", "cpu")
        refused(result, f"tile {tile}", "smallest useful tile", "0 for the whole image")
    assert not (tmp_path / "t.png").exists()
    overlap = esr("upscale", str(files / "a.png"), "--tile", "40", "--overlap", "48", "-o", str(tmp_path / "t.png"), "--device", "cpu")
    refused(overlap, "tile 40", "48 px")
    assert esr("upscale", str(files / "a.png"), "--tile", "32", "-o", str(tmp_path / "t.png"), "--device", "cpu").exit_code == 0


def test_finetuning_an_efdn_student_says_dsclora_needs_the_span_family(tmp_path, images, tiny_model):
    from esrcli.archs import build

    efdn = tmp_path / "efdn_x2.safetensors"
    save_network(build("efdn", channels=8, scale=2).eval(), efdn)
    common = ["finetune-lora", "--data", str(images), "--steps", "1", "--lr-patch", "12", "--device", "cpu", "--quiet"]
    result = esr(*common, "--teacher", tiny_model, "--student", str(efdn), "--out", str(tmp_path / "run"))
    refused(result, "efdn network", "SPAN-family students")
    assert "cannot build the network span" not in result.output


def test_bench_quality_says_where_sets_come_from(tmp_path):
    refused(esr("bench", "quality", "-m", "esr-tiny", "--data", "Set5"), "Set5: no such folder", "ships no benchmark sets", "HR/")


def cpu_bf16(*args: str, isa: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return subprocess.run([sys.executable, "-m", "esrcli", *args], capture_output=True, text=True, env=env, timeout=300)


WARNING = "esr: warning: bf16 is emulated on this CPU"


def test_bf16_on_a_cpu_without_it_warns_and_auto_training_picks_fp32(files, images, tmp_path):
    """oneDNN held to AVX2 computes bf16 as a CPU without AVX-512 BF16 or AMX does: emulated."""
    from esrcli.device import cpu_has_native_bf16

    for isa, native in (("AVX2", False), (None, cpu_has_native_bf16())):
        explicit = cpu_bf16(
            "upscale",
            str(files / "a.png"),
            "-o",
            str(tmp_path / f"{isa}.png"),
            "--precision",
            "bf16",
            "--device",
            "cpu",
            "--quiet",
            isa=isa,
        )
        assert explicit.returncode == 0, explicit.stderr
        assert (WARNING in explicit.stderr) == (not native), explicit.stderr
        assert len([line for line in explicit.stderr.splitlines() if "warning" in line]) == (0 if native else 1)
        run = ["train", *TRAIN[:-1], "--data", str(images), "--device", "cpu"]
        auto = cpu_bf16(*run, "--amp", "auto", "--out", str(tmp_path / f"auto-{isa}"), isa=isa)
        assert auto.returncode == 0 and WARNING not in auto.stderr, auto.stderr
        assert f"on cpu in {'bf16' if native else 'fp32'}," in auto.stderr, auto.stderr
        forced = cpu_bf16(*run, "--amp", "bf16", "--out", str(tmp_path / f"bf16-{isa}"), isa=isa)
        assert forced.returncode == 0 and (WARNING in forced.stderr) == (not native) and "in bf16," in forced.stderr, forced.stderr
    assert cpu_bf16("train", "--config", "esrcli/weights/esr-tiny-x4.toml", "--print-config", isa=None).stdout.count('amp = "auto"') == 1


def test_ray_refuses_a_gpu_index_before_starting_anything(files, tmp_path):
    """Ray numbers each worker's GPUs from 0: a driver-side index would name another GPU, or none."""
    result = esr("upscale", str(files / "a.png"), "-o", str(tmp_path / "o.png"), "--ray", "local", "--device", "cuda:1")
    refused(result, "--device cuda:1 with --ray", "use --device cuda")
    assert not (tmp_path / "o.png").exists()
