"""The Python API (esrcli.load_model, esrcli.upscale), its pixels against the CLI's, a light import, no cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import esrcli
from esrcli.cli import main

PACKAGE = Path(esrcli.__file__).parent
RNG = np.random.default_rng(11)


def photo(width: int = 40, height: int = 28) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    return np.clip(base + RNG.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> esrcli.Model:
    return esrcli.load_model("esr-tiny", device="cpu")


def cli_upscale(tmp_path: Path, image: Image.Image, *args: str) -> Image.Image:
    src = tmp_path / "in.png"
    image.save(src)
    out = tmp_path / "out.png"
    result = CliRunner().invoke(
        main, ["upscale", str(src), "-o", str(out), "--overwrite", "--device", "cpu", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return Image.open(out)


def test_the_model_says_what_it_is(model):
    assert (model.name, model.scale, model.arch, str(model.device), model.dtype) == ("esr-tiny", 4, "span", "cpu", torch.float32)
    assert isinstance(model.network, torch.nn.Module) and model.params < 200_000
    assert esrcli.load_model("esr-tiny", scale=2, device="cpu").network.scale == 2  # the native x2 variant
    with pytest.raises(esrcli.EsrError, match="did you mean"):
        esrcli.load_model("esr-tny")
    with pytest.raises(esrcli.EsrError, match="greater than 1"):
        esrcli.load_model("esr-tiny", scale=0)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P"])
def test_pil_images_keep_their_mode_family_and_equal_the_cli(tmp_path, model, mode):
    rgb = photo()
    alpha = np.where(np.arange(40)[None, :] < 20, 255, 0).astype(np.uint8).repeat(28, 0)
    image = {
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
        "L": Image.fromarray(rgb[..., 0]),
        "LA": Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"),
        "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=32),
    }[mode]
    out = model.upscale(image, tile=32)  # two tiles: 40 px wide
    assert out.size == (160, 112)
    assert out.mode == {"P": "RGB"}.get(mode, mode)
    expected = cli_upscale(tmp_path, image, "--tile", "32")
    assert expected.mode == out.mode and np.array_equal(np.asarray(out), np.asarray(expected))


def test_sixteen_bit_grey_pil_stays_sixteen_bit(tmp_path, model):
    deep = (photo()[..., 0].astype(np.uint16) * 257 + RNG.integers(0, 256, (28, 40))).astype(np.uint16)
    out = model.upscale(Image.fromarray(deep), tile=0)
    assert out.mode == "I;16" and out.size == (160, 112)
    assert len(np.unique(np.asarray(out) % 257)) > 50  # 16-bit values, not 8-bit ones scaled up


@pytest.mark.parametrize("layout", ["uint8 HxWx3", "uint16 HxWx3", "uint8 HxW", "uint16 HxW", "uint8 HxWx4", "uint8 HxWx1", "uint8 HxWx2"])
def test_numpy_arrays_keep_dtype_and_layout_and_equal_the_cli(tmp_path, model, layout):
    kind, shape = layout.split()
    rgb = photo()
    channels = {"HxWx3": 3, "HxW": 0, "HxWx4": 4, "HxWx1": 1, "HxWx2": 2}[shape]
    base = {0: rgb[..., 0], 1: rgb[..., :1], 2: np.dstack([rgb[..., 0], rgb[..., 1]]), 3: rgb, 4: np.dstack([rgb, rgb[..., 2]])}[channels]
    array = base.astype(np.uint16) * 257 if kind == "uint16" else base
    out = esrcli.upscale(array, device="cpu", tile=0)
    assert out.dtype == array.dtype and out.shape == (112, 160, *array.shape[2:])
    if kind == "uint8" and channels in (0, 3, 4):
        expected = np.asarray(cli_upscale(tmp_path, Image.fromarray(array), "--tile", "0"))
        assert np.array_equal(out, expected)


def test_scale_and_tiling_per_call(model):
    array = photo()
    assert model.upscale(array, scale=2).shape == (56, 80, 3)
    assert model.upscale(array, scale=3).shape == (84, 120, 3)
    whole, tiled = model.upscale(array, tile=0), model.upscale(array, tile=32)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1  # tiles see their whole context


def test_tensors_stay_tensors_on_their_device(model):
    chw = torch.from_numpy(photo()).permute(2, 0, 1).float() / 255
    out = model.upscale(chw)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 112, 160) and out.device == chw.device and out.dtype == torch.float32
    batch = model.upscale(torch.stack([chw, chw.flip(-1)]), tile=0)
    assert batch.shape == (2, 3, 112, 160) and torch.allclose(batch[0], out, atol=1e-5)
    tiled = model.upscale(chw, tile=32)
    assert (tiled - out).abs().max() < 1e-4
    via_numpy = model.upscale((chw.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), tile=0)
    assert np.abs(via_numpy.astype(float) - (out.permute(1, 2, 0).numpy() * 255)).max() <= 0.5 + 1e-3
    grey = model.upscale(chw[:1], scale=2)
    assert grey.shape == (1, 56, 80)


def test_bad_inputs_are_refused_clearly(model):
    for bad, message in (
        (np.zeros((8, 8, 3), np.float32), "uint8 or uint16"),
        (np.zeros((8, 8, 5), np.uint8), "C from 1 to 4"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "float"),
        (torch.zeros(2, 8, 8), "C = 1 or 3"),
        ([[0, 1], [1, 0]], "PIL image, a numpy array or a torch tensor"),
    ):
        with pytest.raises(esrcli.EsrError, match=message):
            model.upscale(bad)


def test_api_errors_name_the_value_and_what_to_do(model):
    picture = photo()
    for call, message in (
        (lambda: model.upscale(picture, alpha="nope"), "alpha 'nope': must be one of 'model', 'bicubic'"),
        (lambda: model.upscale(picture, tile=-1), "tile -1: must be a whole number of at least 0"),
        (lambda: model.upscale(picture, tile=4), "tile 4: below the smallest useful tile"),
        (lambda: model.upscale(picture, overlap=-2), "overlap -2"),
        (lambda: model.upscale(picture, scale="2"), "scale must be a number greater than 1, not '2'"),
        (lambda: model.upscale(np.zeros((8, 8), np.int32)), "int32: clip to 0..255"),
        (lambda: model.upscale(np.zeros((8, 8), bool)), "bool: multiply by 255"),
        (lambda: model.upscale(np.zeros((8, 8), np.float64)), "float64: for values in 0..1 multiply by 255"),
        (lambda: model.upscale(torch.full((3, 8, 8), float("nan"))), "NaN or infinite"),
        (lambda: model.upscale(torch.tensor([0.5, float("inf")]).repeat(3, 4, 4)[:, :8, :8]), "NaN or infinite"),
    ):
        with pytest.raises(esrcli.EsrError, match=__import__("re").escape(message)):
            call()


def test_pil_images_are_turned_upright_as_the_cli_does(tmp_path, model):
    """EXIF orientation 6 (rotate 90 clockwise to view): the API gives the CLI's upright pixels."""
    stored = Image.fromarray(photo(40, 28))
    exif = stored.getexif()
    exif[0x0112] = 6
    src = tmp_path / "rot6.jpg"
    stored.save(src, quality=95, exif=exif.tobytes())
    result = CliRunner().invoke(main, ["upscale", str(src), "-o", str(tmp_path / "cli.png"), "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cli = Image.open(tmp_path / "cli.png")
    api = model.upscale(Image.open(src))
    assert api.size == cli.size == (28 * 4, 40 * 4)
    assert np.array_equal(np.asarray(api), np.asarray(cli))
    carried = Image.Exif()
    carried.load(api.info["exif"])
    assert carried.get(0x0112) == 1  # the EXIF it carries says "upright"
    raw = model.upscale(Image.open(src), exif_transpose=False)
    assert raw.size == (40 * 4, 28 * 4)


def test_animated_pil_images_are_upscaled_frame_by_frame_as_the_cli_does(tmp_path, model):
    # Animations used to be refused; since issue 24 every frame is upscaled (tests/test_animated.py).
    frames = [Image.new("RGB", (16, 12), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=[40, 80, 120], loop=0)
    cli = CliRunner().invoke(main, ["upscale", str(tmp_path / "anim.gif"), "--device", "cpu"], catch_exceptions=False)
    assert cli.exit_code == 0, cli.output
    with Image.open(tmp_path / "anim_x4.gif") as written:
        assert written.n_frames == 3 and written.size == (64, 48)
    api = model.upscale(Image.open(tmp_path / "anim.gif"))
    assert [f.size for f in api] == [(64, 48)] * 3 and [f.info["duration"] for f in api] == [40, 80, 120]


def fresh_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return set(out.split())


def test_help_version_and_models_list_import_neither_torch_nor_numpy():
    for argv in (["--help"], ["--version"], ["models", "list"], ["upscale", "--help"], ["train", "--help"], ["bench", "quality", "--help"]):
        code = f"from esrcli.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
        loaded = fresh_modules(code)
        assert "torch" not in loaded and "numpy" not in loaded, argv
    loaded = fresh_modules("import esrcli; esrcli.__version__; esrcli.EsrError")
    assert "torch" not in loaded and "numpy" not in loaded
    assert "torch" in fresh_modules("import esrcli; esrcli.load_model")  # the API itself loads it


def package_modules() -> list[str]:
    return sorted(
        ".".join(("esrcli", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
    )


def test_every_module_imports_alone():
    from concurrent.futures import ThreadPoolExecutor

    def alone(name: str) -> tuple[str, int, str]:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], timeout=120, capture_output=True, text=True)
        return name, proc.returncode, proc.stderr.strip().splitlines()[-1:]

    with ThreadPoolExecutor(2) as pool:
        failures = [r for r in pool.map(alone, [m for m in package_modules() if m != "esrcli.__main__"]) if r[1]]
    assert not failures


def imports_of(module: str) -> set[str]:
    """The esrcli modules `module` imports, at its top or inside its functions (not for type checking only)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom):
                base = package.split(".")
                target = ".".join(base[: len(base) - sub.level + 1] + ([sub.module] if sub.module else [])) if sub.level else sub.module
                if target and target.startswith("esrcli"):
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in sub.names)
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.startswith("esrcli"))
    return found


def test_no_import_cycles():
    """Not even through imports deferred into functions: each module's dependencies form a tree of concerns."""
    modules = set(package_modules())
    graph = {m: {t for t in imports_of(m) if t in modules and t != m} for m in modules}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])


def test_no_package_cycles():
    """Each subpackage (archs, train, cli, video) taken as one node beside the top-level modules: imports
    between them go one way, so a package can be understood, and replaced, from below (ARCHITECTURE.md)."""
    modules = set(package_modules())

    def node(module: str) -> str:
        parts = module.split(".")
        inside = len(parts) > 2 or PACKAGE.joinpath(*parts[1:], "__init__.py").is_file()
        return ".".join(parts[:2]) if inside else module

    graph: dict[str, set[str]] = {}
    for m in modules:
        graph.setdefault(node(m), set()).update(node(t) for t in imports_of(m) if t in modules and node(t) != node(m))
    assert {"esrcli.archs", "esrcli.train", "esrcli.cli"} <= set(graph)
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for nxt in sorted(graph[n]):
            if state.get(nxt) == 1:
                raise AssertionError("package cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_the_readme_python_examples_run(tmp_path):
    readme = (PACKAGE.parent / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
    assert blocks, "README has no Python example"
    for code in blocks:
        subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300, capture_output=True)
