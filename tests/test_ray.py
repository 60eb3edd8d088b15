"""esr on a real Ray cluster on 127.0.0.1 (token authentication on), started and stopped by these tests."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photos
from conftest import run_process as esr
from PIL import Image

from esrcli.video import FFMPEG

# Ray is never imported in this process (it reads its environment at import): every use is a subprocess
# with RAY_ENV, so no connection ever leaves the loopback interface.
if importlib.util.find_spec("ray") is None:
    pytest.skip('Ray is optional: pip install "esrcli[ray]"', allow_module_level=True)

RAY_ENV = {
    # Ray otherwise advertises and connects to the machine's network address; keep it all on loopback.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_BACKEND_LOG_LEVEL": "error",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[int]:
    """Every live process of session `sid`: the head and all Ray started under it, and nothing else."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node on 127.0.0.1 with two CPUs and token authentication, in a session of its own: at the end
    every process of that session is stopped (SIGTERM, then SIGKILL), and no other Ray on the machine."""
    env = {**RAY_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(temp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("session_latest/logs/raylet.out")) or not port_open(port):
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            for pid in session_processes(head.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while session_processes(head.pid) and time.monotonic() < deadline:
                head.poll()
                time.sleep(0.2)
        head.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_cluster_stays_on_loopback(cluster):
    code = (
        f"import json, ray; ray.init(address={cluster!r}, logging_level='ERROR'); "
        "print(json.dumps([[n['NodeManagerAddress'], n['Alive']] for n in ray.nodes()] + [ray.cluster_resources().get('CPU')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ.copy(), check=True)
    *nodes, cpus = json.loads(out.stdout.strip().splitlines()[-1])
    assert nodes and all(address == "127.0.0.1" and alive for address, alive in nodes) and cpus == 2
    wrong = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_AUTH_TOKEN": "0" * 64, "RAY_CONNECT_TIMEOUT_S": "5"},
    )
    assert wrong.returncode != 0  # authentication is on: a wrong token is refused


def test_a_folder_through_ray_equals_a_local_run(cluster, tmp_path):
    photos(tmp_path / "in", 5, 40)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    local = esr("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "local"), "--tile", "0", "--device", "cpu", "--quiet")
    assert local.returncode == 1  # the broken file
    remote = esr(
        "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "ray"), "--tile", "0", "--ray", cluster, "--ray-workers", "2", "--json"
    )
    assert remote.returncode == 1, remote.stderr
    summary = json.loads(remote.stdout)
    assert summary["ray"]["workers"] == 2 and summary["ray"]["retried"] == []
    assert [Path(f["input"]).name for f in summary["failures"]] == ["broken.png"]  # reported once, not retried
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir()) and len(names) == 5  # no marker or partial left
    for name in names:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "local" / name)), np.asarray(Image.open(tmp_path / "ray" / name)))


def test_tiled_images_through_ray_equal_a_local_run_pixel_for_pixel(cluster, benchmark_data, tmp_path):
    """Default tiling on an image larger than one tile: the driver's plan and thread count travel with the
    task. With each worker on its own share of the CPUs (one thread), single pixels came out a level off."""
    import esrcli

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ppt3.png").symlink_to(benchmark_data / "Set14" / "HR" / "ppt3.png")  # one pixel differs with one thread
    assert esrcli.load_model("esr-tiny", device="cpu").pipeline().count_tiles(656, 529) > 1  # blending and tile shapes matter
    local = esr("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "local"), "--device", "cpu", "--quiet")
    assert local.returncode == 0, local.stderr
    remote = esr("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "ray"), "--ray", cluster, "--ray-workers", "2", "--json")
    assert remote.returncode == 0, remote.stderr
    a, b = (np.asarray(Image.open(tmp_path / side / "ppt3_x4.png")) for side in ("local", "ray"))
    assert a.shape == (2624, 2116, 3) and np.array_equal(a, b), np.argwhere(a != b)[:5]


def framemd5(path: Path) -> list[str]:
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"], capture_output=True, text=True)
    return [line.rsplit(",", 1)[-1] for line in out.stdout.splitlines() if line and not line.startswith("#")]


def test_a_lossless_video_through_ray_has_the_local_frames_and_resumes_across(cluster, tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=48x32:r=24000/1001",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:r=48000",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-g",
            "5",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(clip),
        ],
        check=True,
    )
    common = ["--codec", "ffv1", "--crf", "-1", "--pix-fmt", "yuv444p", "--segment", "0.5", "--tile", "0", "--device", "cpu", "--quiet"]
    local = esr("video", str(clip), str(tmp_path / "local.mkv"), *common)
    assert local.returncode == 0, local.stderr
    remote = esr("video", str(clip), str(tmp_path / "ray.mkv"), *common, "--ray", cluster, "--ray-workers", "2")
    assert remote.returncode == 0, remote.stderr
    frames = framemd5(tmp_path / "local.mkv")
    assert len(frames) > 60 and framemd5(tmp_path / "ray.mkv") == frames
    header = subprocess.run([FFMPEG, "-hide_banner", "-i", str(tmp_path / "ray.mkv")], capture_output=True, text=True).stderr
    assert "Audio: aac" in header and "23.98 fps" in header

    # Interrupted on the cluster, finished here: the manifest is the same for both.
    out = tmp_path / "across.mkv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "esrcli", "video", str(clip), str(out), *common, "--ray", cluster, "--ray-workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        start_new_session=True,
    )
    manifest = tmp_path / ".across.mkv.esr-parts" / "manifest.json"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(manifest.read_text())["segments"]:
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be interrupted")
    assert proc.returncode == 130 and "--resume" in err, err
    finished = esr("video", str(clip), str(out), *common, "--resume", "--json")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["resumed_from"] > 0 and framemd5(out) == frames


def test_a_killed_worker_is_replaced_and_its_file_comes_out_right(cluster, tmp_path):
    photos(tmp_path / "in", 8, 160)
    local = esr("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "local"), "--tile", "0", "--device", "cpu", "--quiet")
    assert local.returncode == 0, local.stderr
    args = [
        sys.executable,
        "-m",
        "esrcli",
        "upscale",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "ray"),
        "--tile",
        "0",
        "--ray",
        cluster,
        "--ray-workers",
        "2",
        "--json",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(), start_new_session=True)
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            busy = subprocess.run(["pgrep", "-f", "ray::Worker.image"], capture_output=True, text=True).stdout.split()
            if busy:
                killed = int(busy[0])
                os.kill(killed, signal.SIGKILL)  # a worker dies in the middle of a file
            time.sleep(0.01)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed is not None, "no worker was seen at work"
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["ray"]["retried"] and not summary["failures"] and len(summary["outputs"]) == 8
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir())  # nothing written twice, no partial left
    for name in names:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "local" / name)), np.asarray(Image.open(tmp_path / "ray" / name)))


def test_no_cluster_is_one_line_in_seconds(tmp_path):
    photos(tmp_path / "in", 1, 16)
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1", "127.0.0.1"):
        started = time.monotonic()
        dead = esr("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--ray", address, timeout=60)
        assert dead.returncode == 1 and dead.stderr.startswith(f"esr: error: --ray {address}: "), dead.stderr
        assert len(dead.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30
        assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_ray_local_starts_and_stops_its_own_cluster(tmp_path):
    photos(tmp_path / "in", 2, 24)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    local = esr("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "plain"), "--tile", "0", "--device", "cpu", "--quiet")
    assert local.returncode == 0, local.stderr
    args = [
        sys.executable,
        "-m",
        "esrcli",
        "upscale",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "ray"),
        "--tile",
        "0",
        "--ray",
        "local",
        "--json",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, **RAY_ENV}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
        deadline = time.monotonic() + 30
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = session_processes(proc.pid)
    finally:
        for pid in session_processes(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["ray"]["workers"] >= 1 and left == []  # the cluster it started is gone
    for name in sorted(p.name for p in (tmp_path / "plain").iterdir()):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "plain" / name)), np.asarray(Image.open(tmp_path / "ray" / name)))
