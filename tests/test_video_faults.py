"""`esr video` faults that once escaped as an "unexpected ..." line, a wrong exit code, a hang or silent acceptance.

Real ffmpeg, real files and the CLI as a real process: an output folder that cannot be written, an
input cut off inside a packet, a disk that fills up mid-run, MPEG-TS and damaged inputs, file names
with square brackets, a constant-quality factor the encoder cannot take.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import pytest

from esrcli.video import FFMPEG, parts_dir, probe


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=120)


def video(*args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`esr video` as a real process with a deadline (a hang fails the test, not the suite)."""
    cmd = [*prefix, sys.executable, "-m", "esrcli", "video", *args, "--quiet", "--device", "cpu"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "ESR_DEBUG": "", **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    """The run failed with exit code 1 and exactly one `esr: error:` line holding every phrase; that line."""
    text = proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "unexpected" not in text and "a defect in esr" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esr: error: "), text
    for phrase in phrases:
        assert phrase in lines[0], (phrase, text)
    return lines[0]


def decoded_frames(path: Path) -> int:
    """How many frames ffmpeg itself decodes from `path` (every frame as it comes, none dropped or doubled)."""
    out = subprocess.run(
        [FFMPEG, "-v", "quiet", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "framecrc", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=5", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "in.mp4"))
    # 75 frames at 25 fps with B-frames, the index first (as a streamed or downloaded MP4 has it), so
    # that any cut keeps the container's announced 3 s
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=25",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        str(d / "full.mp4"),
    )
    return d


# --- 1: an output folder that cannot be written --------------------------------------------------


def read_only_prefix(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs the rest in a private mount namespace where `folder` is an empty
    read-only tmpfs (chmod does not stop root); skips where this sandbox cannot mount."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed: cannot make a read-only folder")
    prefix = (unshare, "-m" if os.geteuid() == 0 else "-rm", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(folder))
    check = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True, text=True, timeout=30)
    if "Read-only file system" not in check.stderr:
        pytest.skip(f"cannot mount a read-only tmpfs here: {check.stderr.strip() or 'the folder stayed writable'}")
    return prefix


def test_a_read_only_output_folder_is_one_line_naming_the_output(clips, tiny_model, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "x.mp4"
    proc = video(str(clips / "in.mp4"), str(out), "-m", tiny_model, prefix=read_only_prefix(folder))
    one_error_line(proc, f"{out}: cannot write (Read-only file system)")
    assert sorted(folder.iterdir()) == []  # the namespace's mount is gone with it; nothing reached the real folder


def as_nobody() -> tuple[str, ...]:
    """A command prefix that runs the rest as nobody when this is root (root writes into any folder
    whatever its mode); none otherwise. Skips where that cannot run esr."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root writes into any folder whatever its mode, and setpriv (util-linux) is not there to drop that")
    prefix = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")
    check = subprocess.run([*prefix, sys.executable, "-c", "import esrcli.video"], capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        pytest.skip(f"nobody cannot run esr here: {check.stderr.strip()[-200:]}")
    return prefix


@pytest.mark.parametrize("mode", [0o555, 0o644])  # no writing into the folder; not even looking into it
def test_a_folder_without_permission_is_one_line(clips, tiny_model, mode):
    """As an unprivileged user, in a folder of its own (pytest's folders are private to whoever runs it)."""
    prefix = as_nobody()
    root = Path(tempfile.mkdtemp(prefix="esr-permissions-"))
    try:
        root.chmod(0o777)
        src, model = root / "in.mp4", root / "model.safetensors"
        shutil.copy(clips / "in.mp4", src)
        shutil.copy(tiny_model, model)
        for path in (src, model):
            path.chmod(0o644)
        folder = root / "locked"
        folder.mkdir()
        folder.chmod(mode)
        out = folder / "x.mp4"
        proc = video(str(src), str(out), "-m", str(model), prefix=prefix, env={"ESR_CACHE": str(root / "cache"), "HOME": str(root)})
        one_error_line(proc, f"{out}: cannot write (Permission denied)")
        folder.chmod(0o755)
        assert sorted(folder.iterdir()) == []
    finally:
        if (root / "locked").exists():
            (root / "locked").chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_an_output_whose_parent_is_a_file_is_one_line(clips, tiny_model, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "x.mp4"
    one_error_line(video(str(clips / "in.mp4"), str(out), "-m", tiny_model), f"{out}: cannot write ({blocker} is a file, not a folder)")
    assert blocker.read_text() == "a file, not a folder" and sorted(tmp_path.iterdir()) == [blocker]


# --- 2: a file cut off inside a packet ------------------------------------------------------------


HOLDS = re.compile(r"holds (\d+\.\d{3}) s \((\d+) frames\)")
MISSING = re.compile(r"warning: .*: (\d+\.\d{3}) s of its video are missing")


# Bytes kept, each cut inside a packet: after 21 whole frames; after frames 0-2 and 4 (3 was a B-frame coded
# after the cut); 0.24 s before the end (which esr did not even see as truncated)
@pytest.mark.parametrize("cut", [4000, 3276, 6217])
def test_allow_truncated_upscales_what_ffmpeg_decodes_from_a_file_cut_inside_a_packet(clips, tiny_model, tmp_path, cut):
    src = tmp_path / "trunc.mp4"
    src.write_bytes((clips / "full.mp4").read_bytes()[:cut])
    held = decoded_frames(src)
    assert 0 < held < 75
    out = tmp_path / "t2.mp4"

    refused = video(str(src), str(out), "-m", tiny_model)
    line = one_error_line(refused, "the file is truncated", "--allow-truncated")
    seconds, frames = HOLDS.search(line).groups()
    assert int(frames) == held and seconds == f"{held / 25:.3f}", line  # the seconds are those of the frames at 25 fps
    assert not out.exists() and not parts_dir(out).exists()

    accepted = video(str(src), str(out), "-m", tiny_model, "--allow-truncated")
    assert accepted.returncode == 0, accepted.stderr
    assert "Traceback" not in accepted.stderr and "esr: error" not in accepted.stderr, accepted.stderr
    assert MISSING.search(accepted.stderr).group(1) == f"{3 - held / 25:.3f}", accepted.stderr
    assert decoded_frames(out) == held and not parts_dir(out).exists()
    result = probe(out)
    assert result.frames == held and result.rate == 25 and not result.vfr and result.duration == Fraction(held, 25)


@pytest.mark.parametrize("size,kept", [("40k", False), ("300k", True)])  # a segment of FFV1 here is about 100 KB
def test_a_failed_run_keeps_parts_only_when_it_says_so(clips, tiny_model, tmp_path, size, kept):
    """The disk fills up mid-run (the output folder is a small tmpfs): a run that finished some segments
    keeps them and its one line says --resume continues; one that finished none leaves nothing."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    src = tmp_path / "long.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-t", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src))
    folder = tmp_path / "small"
    folder.mkdir()
    out = folder / "x.mkv"
    # inside the namespace, after the run: what is left in the tmpfs, and the manifest of the parts kept
    script = f'mount -t tmpfs -o size={size} tmpfs "$0" && "$@"; code=$?; ls -A "$0"; cat "$0"/.*.esr-parts/manifest.json 2>/dev/null; exit $code'
    proc = video(
        str(src),
        str(out),
        "-m",
        tiny_model,
        "--codec",
        "ffv1",
        "--crf",
        "-1",
        "--segment",
        "0.5",
        prefix=(unshare, "-m", "sh", "-c", script, str(folder)),
    )
    line = one_error_line(proc, f"{out}: ", "No space left on device")
    left, _, manifest = proc.stdout.partition("\n")
    if kept:
        frames = sum(s["frames"] for s in json.loads(manifest)["segments"])
        assert left == parts_dir(out).name and frames > 0, proc.stdout
        hint = f"; {frames} finished frames are kept in {parts_dir(out)}: run the same command with --resume to continue"
        assert line.endswith(hint), line
    else:
        assert left == "" and "--resume" not in line and "kept" not in line, (line, proc.stdout)


# --- inputs that crashed or stalled the run --------------------------------------------------------


def test_an_mpeg_ts_input_is_upscaled(tiny_model, tmp_path):
    """MPEG-TS packets carry side data, which ffmpeg's packet list prints after the flags ("S=1, MPEGTS
    Stream ID, ..."): it was read as the flags (unexpected ValueError for every .ts file)."""
    src = tmp_path / "in.ts"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=32x24:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:r=48000",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(src),
    )
    out = tmp_path / "out.mkv"
    proc = video(str(src), str(out), "-m", tiny_model)
    assert proc.returncode == 0, proc.stderr
    result = probe(out)
    assert result.frames == decoded_frames(src) == 25 and result.rate == 25 and [s.kind for s in result.streams] == ["video", "audio"]


def test_a_damaged_input_that_floods_the_decoders_log_does_not_stall(tiny_model, tmp_path):
    """A damaged stream makes the decoder complain at every frame; its messages went to a pipe nobody read
    while frames were decoded, so once 64 KiB had piled up the decoder, and the run, waited forever."""
    clean = tmp_path / "clean.ts"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-t",
        "12",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "1",
        "-x264-params",
        "slices=3",
        str(clean),
    )
    data = bytearray(clean.read_bytes())
    for packet in range(20, len(data) // 188):  # damage the payload of every 188-byte TS packet, never its header
        for offset in (40, 90, 140):
            data[packet * 188 + offset] ^= 0x5A
    (tmp_path / "damaged.ts").write_bytes(data)
    src = tmp_path / "damaged.mkv"  # the same damaged packets in an intact container
    ffmpeg("-i", str(tmp_path / "damaged.ts"), "-c", "copy", str(src))
    log = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(src), "-map", "0:v:0", "-f", "null", "-"], capture_output=True, timeout=60
    ).stderr
    if len(log) < 80_000:
        pytest.skip(f"this ffmpeg logs {len(log)} bytes for the damaged file, not more than a pipe holds")
    out = tmp_path / "out.mp4"
    proc = video(str(src), str(out), "-m", tiny_model, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert probe(out).frames == decoded_frames(src) and not parts_dir(out).exists()


def test_a_file_name_in_square_brackets_is_printed_as_it_is(clips, tiny_model, tmp_path):
    """The error line went through Rich markup: "[draft]" in a name was taken for a style and vanished."""
    folder = tmp_path / "[draft]"
    folder.mkdir()
    src = folder / "[bonus] clip.mp4"
    src.write_bytes((clips / "full.mp4").read_bytes()[:4000])  # truncated: refused with a line naming it
    one_error_line(video(str(src), str(tmp_path / "out.mp4"), "-m", tiny_model), f"esr: error: {src}: the file is truncated")
    accepted = video(str(src), str(tmp_path / "out.mp4"), "-m", tiny_model, "--allow-truncated")
    assert accepted.returncode == 0 and f"warning: {src} is truncated" in accepted.stderr, accepted.stderr


# --- 3: constant-quality factors out of range -----------------------------------------------------


@pytest.mark.parametrize(
    "codec,crf,phrase",
    [
        ("libx264", "999", "--crf 999 is out of range for libx264 (0 to 51"),
        ("libx264", "52", "--crf 52 is out of range for libx264 (0 to 51"),
        ("libx265", "60", "--crf 60 is out of range for libx265 (0 to 51"),
        ("libvpx-vp9", "64", "--crf 64 is out of range for libvpx-vp9 (0 to 63"),
        ("libaom-av1", "100", "--crf 100 is out of range for libaom-av1 (0 to 63"),
        ("libsvtav1", "64", "--crf 64 is out of range for libsvtav1 (0 to 63"),
    ],
)
def test_an_out_of_range_crf_is_refused_before_any_work(clips, tiny_model, tmp_path, codec, crf, phrase):
    out = tmp_path / "x.mkv"
    one_error_line(video(str(clips / "in.mp4"), str(out), "-m", tiny_model, "--codec", codec, "--crf", crf, timeout=60), f"{out}: {phrase}")
    assert sorted(tmp_path.iterdir()) == []


def test_the_encoders_own_range_error_comes_through_as_one_line(clips, tiny_model, tmp_path):
    """What esr has no table for reaches the encoder: its own complaint, with the range, is the line."""
    out = tmp_path / "x.webm"
    proc = video(
        str(clips / "in.mp4"),
        str(out),
        "-m",
        tiny_model,
        "--codec",
        "libvpx-vp9",
        "--crf",
        "-1",
        "--ffmpeg-arg=-crf",
        "--ffmpeg-arg=99",
        timeout=60,
    )
    one_error_line(proc, f"{out}: ", "99", "out of range [-1 - 63]")
    assert sorted(tmp_path.iterdir()) == []


def test_crf_at_the_ends_of_the_range_is_accepted(clips, tiny_model, tmp_path):
    for crf in ("0", "51"):
        out = tmp_path / f"crf{crf}.mp4"
        proc = video(str(clips / "in.mp4"), str(out), "-m", tiny_model, "--crf", crf)
        assert proc.returncode == 0, proc.stderr
        assert probe(out).frames == 5
