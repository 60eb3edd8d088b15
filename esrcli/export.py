"""Fused networks to files that other programs load: esr safetensors, ONNX, and spandrel's SPAN layout.

Every export is written to a temporary name, checked against the network it came from, and only
then renamed into place: a file that does not reproduce esr's output is never left behind.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from .archs import SRNet, fused_state_dict
from .archs.blocks import EvalConv
from .atomic import atomic_write
from .errors import EsrWarning
from .errors import ExportError as ExportError
from .export_formats import EXPORT_FORMATS
from .version import __version__
from .weights import load_network, network_metadata, save_network, write_safetensors

if TYPE_CHECKING:
    from .refs import ModelRef

ONNX_OPSET = 18
# An export must give esr's 8-bit output to within this many levels, at this PSNR or better. A
# half-precision export is held to the PSNR only: fp16 rounding moves a few pixels by a few levels
# wherever SPAN's activations are large, in esr's own fp16 too (README, "Using esr models elsewhere").
MAX_LEVELS = 2
MIN_PSNR = 50.0
ONNX_EXTRA = "pip install 'esrcli[onnx]'"


@dataclass
class Agreement:
    """How closely an exported model reproduces esr's output on one image."""

    image: str
    size: tuple[int, int]  # input width, height
    max_abs: float  # largest difference of the float outputs (0..1)
    max_levels: int  # largest difference after rounding both to 8 bits
    psnr: float  # of the 8-bit outputs, one against the other (inf when identical)

    def passes(self, fp16: bool = False) -> bool:
        return self.psnr >= MIN_PSNR and (fp16 or self.max_levels <= MAX_LEVELS)

    def describe(self) -> str:
        if math.isinf(self.psnr):
            return f"{self.image} {self.size[0]}x{self.size[1]}: identical in 8 bits, max |diff| {self.max_abs:.1e}"
        levels = f"{self.max_levels} level{'' if self.max_levels == 1 else 's'}"
        return f"{self.image} {self.size[0]}x{self.size[1]}: at most {levels} apart in 8 bits, {self.psnr:.1f} dB, max |diff| {self.max_abs:.1e}"


@dataclass
class ExportResult:
    path: Path
    format: str
    bytes: int
    checks: list[Agreement] = field(default_factory=list)
    unchecked: str = ""  # why the output was not compared, when it was not

    def as_dict(self) -> dict:
        return {
            "out": str(self.path),
            "format": self.format,
            "bytes": self.bytes,
            "checks": [
                {"image": c.image, "size": list(c.size), "max_levels": c.max_levels, "psnr": c.psnr, "max_abs": c.max_abs}
                for c in self.checks
            ],
            "unchecked": self.unchecked or None,
        }


def format_for(out: Path, fmt: str | None) -> str:
    """The format asked for, or the one the output's suffix names."""
    if fmt:
        return fmt
    chosen = next((f.name for f in EXPORT_FORMATS.values() if out.suffix.lower() in f.implied_by), None)
    if chosen is None:
        raise ExportError(f"{out}: name the file .safetensors (esr), .onnx or .pth (spandrel), or pass --format")
    return chosen


@dataclass
class ExportSource:
    """A model opened for export: its fused network, what to record about it, and its own files."""

    name: str  # registry name, file stem or run folder name: the stem of files written from it
    network: SRNet
    metadata: dict[str, str]  # esr.* facts about where it came from, written into every export
    inputs: tuple[Path, ...] = ()  # files the export must never overwrite
    licence: str = ""
    paper: str = ""
    title: str = ""

    def export(self, out: str | Path, **options: object) -> ExportResult:
        """`export_network` with this model's network, metadata, protected files and name."""
        return export_network(self.network, out, metadata=self.metadata, protected=self.inputs, name=self.name, **options)


def open_source(
    ref: str | ModelRef,
    *,
    native: int | None = None,
    use_ema: bool = True,
    strength: float = 1.0,
    denoise: float = 0.0,
    progress: bool = True,
) -> ExportSource:
    """Anything -m accepts, fused; `use_ema` and `strength` choose a run folder's weights; `denoise` bakes a
    registry model's mix with its robust partner into the file (esrcli.denoise)."""
    from .loading import load_reference
    from .refs import ModelRef

    model = ModelRef.parse(ref)
    if model.kind != "run" and (not use_ema or strength != 1.0):
        raise ExportError(f"{model.text}: --raw and --strength choose a training run's weights; this is not a run folder")
    loaded = load_reference(model, native=native, progress=progress, use_ema=use_ema, lora_strength=strength)
    network = loaded.network
    if native is not None and model.kind != "registry" and native != network.scale:
        raise ExportError(f"{model.text}: a x{network.scale} model; -s picks among a registry model's scales")
    name = {"registry": model.name, "run": model.name, "hub": Path(model.text.split("@")[0]).stem}.get(model.kind, model.path.stem)
    entry = model.entry
    source = ExportSource(
        name,
        network,
        dict(loaded.provenance),
        loaded.inputs,
        licence=entry.licence if entry else loaded.provenance.get("esr.licence", "") if model.kind == "file" else "",
        paper=entry.paper if entry else "",
        title=entry.title if entry else "",
    )
    return _denoised(source, model, denoise, progress) if denoise else source


def _denoised(source: ExportSource, model: ModelRef, denoise: float, progress: bool) -> ExportSource:
    """The model mixed with its robust partner as `esr upscale --denoise` mixes it (esrcli.denoise.mix)."""
    from .denoise import DenoiseError, mix, partner_of
    from .loading import load_reference

    partner = partner_of(model)
    if source.network.scale not in partner.scales:
        raise DenoiseError(
            f"{model.text} x{source.network.scale}: its robust partner {partner.name} has no x{source.network.scale} weights to mix with"
        )
    other = load_reference(partner, native=source.network.scale, progress=progress).network
    metadata = {**source.metadata, "esr.denoise": f"{denoise:g}", "esr.robust": partner.name}
    return ExportSource(
        f"{source.name}-denoise{denoise:g}",
        mix(source.network, other, denoise).eval(),
        metadata,
        source.inputs,
        licence=source.licence,
        paper=source.paper,
        title=source.title,
    )


# --- the reference image ---------------------------------------------------------------------


def check_card(width: int = 101, height: int = 75, seed: int = 0) -> np.ndarray:
    """An RGB uint8 picture with the statistics of a photograph, drawn, so every install has one.

    Its colour field has a 1/f amplitude spectrum (that of natural images) under hard-edged shapes
    and text: white noise would drive the networks' activations far past anything a photo does and
    measure rounding, not the export (see README, "Using esr models elsewhere")."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(width, height))
    planes = []
    for _ in range(3):
        spectrum = amplitude * np.exp(2j * np.pi * rng.random((height, width)))
        plane = np.real(np.fft.ifft2(spectrum))
        planes.append((plane - plane.min()) / (np.ptp(plane) or 1.0))
    field_ = np.stack(planes, axis=2)
    image = Image.fromarray((40 + 175 * field_).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.integers(0, width - 8), rng.integers(0, height - 8)
        box = (int(x0), int(y0), int(x0 + rng.integers(6, width // 2)), int(y0 + rng.integers(6, height // 2)))
        colour = tuple(int(c) for c in rng.integers(30, 226, 3))  # no clipped channels: see README on saturated edges
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    draw.text((4, height // 2 - 6), "esr 0123", fill=(235, 232, 225))
    draw.line((0, height - 3, width, 3), fill=(30, 30, 40), width=1)
    return np.array(image)


def as_input(pixels: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 255.0


def agreement(image: str, pixels: np.ndarray, expected: Tensor, got: Tensor) -> Agreement:
    """`got` against `expected` (NCHW floats in 0..1), in floats and in 8-bit levels."""
    exp, out = expected.double().clamp(0, 1), got.double().clamp(0, 1)
    levels = ((exp * 255).round() - (out * 255).round()).abs()
    mse = float((levels**2).mean())
    return Agreement(
        image=image,
        size=(pixels.shape[1], pixels.shape[0]),
        max_abs=float((exp - out).abs().max()),
        max_levels=int(levels.max()),
        psnr=math.inf if mse == 0 else 10 * math.log10(255**2 / mse),
    )


def check_images(picture: tuple[str, np.ndarray] | None = None) -> list[tuple[str, np.ndarray]]:
    """The (name, RGB uint8) picture to compare on, default the test card, and a small odd crop of it:
    sizes the export never saw, one small enough for EFDN's padded attention branch."""
    name, image = picture or ("test card", check_card())
    return [(name, image), (f"{name} (13x11 crop)", np.ascontiguousarray(image[:11, :13]))]  # W x H, as every size esr prints


# --- ONNX ------------------------------------------------------------------------------------


class OnnxGraph(nn.Module):
    """What the ONNX file computes: esr's network and the clamp to 0..1 that esr applies after it."""

    def __init__(self, network: SRNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - the graph's input is named "input"
        return self.network(input).clamp(0, 1)


def require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: {ONNX_EXTRA}")
    if not hasattr(torch.export, "Dim") or tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 6):
        raise ExportError(f"ONNX export needs torch 2.6 or newer (this is {torch.__version__})")


def write_onnx(network: SRNet, path: Path, *, fp16: bool, metadata: Mapping[str, str]) -> None:
    """Export with torch's dynamo exporter: dynamic height and width, the network's metadata as properties."""
    import onnx

    dtype = torch.float16 if fp16 else torch.float32
    graph = OnnxGraph(_copy(network).to(dtype)).eval()
    example = torch.rand(2, 3, 32, 32, dtype=dtype)  # not 1: torch.export would fix a dimension of size 1
    batch, height, width = torch.export.Dim("batch", min=1), torch.export.Dim("height", min=1), torch.export.Dim("width", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes={"input": {0: batch, 2: height, 3: width}},
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; none should reach a user as a traceback
        raise ExportError(f"{path}: torch could not export {network.arch} to ONNX: {' '.join(str(exc).split())[:300]}") from None
    finally:
        quiet.setLevel(level)
    model = program.model_proto
    model.producer_name, model.producer_version = "esr", __version__
    model.doc_string = (
        f"esr {network.arch} x{network.scale}: input NCHW {'float16' if fp16 else 'float32'} RGB in 0..1, any batch, height and width; "
        f"output NCHW RGB in 0..1, {network.scale}x the height and width."
    )
    onnx.helper.set_model_props(model, dict(metadata))
    onnx.save_model(model, str(path))


def _copy(network: SRNet) -> SRNet:
    import copy

    return copy.deepcopy(network).cpu().float().eval()


def onnx_session(path: Path, providers: list[str] | None = None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def check_onnx(path: Path, network: SRNet, images: list[tuple[str, np.ndarray]], fp16: bool) -> list[Agreement]:
    """Run the file in onnxruntime on `images` and compare with esr's output."""
    session = onnx_session(path)
    results = []
    for name, pixels in images:
        x = as_input(pixels)
        with torch.inference_mode():
            expected = network(x).clamp(0, 1)
        got = session.run(None, {"input": x.numpy().astype(np.float16 if fp16 else np.float32)})[0]
        results.append(agreement(name, pixels, expected, torch.from_numpy(got.astype(np.float32))))
    return results


# --- spandrel --------------------------------------------------------------------------------


def spandrel_state_dict(network: SRNet, source: str = "model") -> dict[str, Tensor]:
    """SPAN in the training-form layout spandrel detects: every fused 3x3 becomes Conv3XC branches
    (1x1 -> 3x3 -> 1x1 with gain 2, and a 1x1 skip) whose re-fusion gives back that kernel exactly.

    The first 1x1 copies the input into the first half of the doubled channels, the 3x3 holds the
    fused kernel and bias in its first block, the last 1x1 takes the first half back, and the skip
    is zero: every product in the re-fusion is by 1 or by 0, so no rounding enters."""
    if not type(network).spandrel:  # the architecture declares whether spandrel (chaiNNer, ComfyUI) knows it
        raise ExportError(f"{source}: spandrel has no {type(network).title} architecture; export it with --format onnx instead")
    config = network.config
    if network.arch != "span" or config.get("cat_channels") not in (None, config["channels"]):
        raise ExportError(
            f"{source}: spandrel's SPAN has no narrowed concat tail (this model's conv_cat gives {config.get('cat_channels')} channels); export it with --format onnx instead"
        )
    if config["in_channels"] != 3 or config["out_channels"] != 3:
        raise ExportError(f"{source}: spandrel's SPAN loads RGB models only")
    sd = {k: v.detach().float().cpu() for k, v in fused_state_dict(network).items()}
    for name, module in network.named_modules():
        if not isinstance(module, EvalConv):
            continue
        weight, bias = sd[f"{name}.eval_conv.weight"], sd[f"{name}.eval_conv.bias"]
        c_out, c_in = weight.shape[:2]
        first = torch.zeros(2 * c_in, c_in, 1, 1)
        first[:c_in, :, 0, 0] = torch.eye(c_in)
        middle = torch.zeros(2 * c_out, 2 * c_in, 3, 3)
        middle[:c_out, :c_in] = weight
        last = torch.zeros(c_out, 2 * c_out, 1, 1)
        last[:, :c_out, 0, 0] = torch.eye(c_out)
        sd.update(
            {
                f"{name}.sk.weight": torch.zeros(c_out, c_in, 1, 1),
                f"{name}.sk.bias": torch.zeros(c_out),
                f"{name}.conv.0.weight": first,
                f"{name}.conv.0.bias": torch.zeros(2 * c_in),
                f"{name}.conv.1.weight": middle,
                f"{name}.conv.1.bias": torch.cat([bias, torch.zeros(c_out)]),
                f"{name}.conv.2.weight": last,
                f"{name}.conv.2.bias": torch.zeros(c_out),
            }
        )
    return sd


def _without_clamp(network: SRNet, name: str) -> SRNet:
    """The weights as released, with a warning: spandrel's SPAN has no place for esr's feature clamp. Warned,
    not refused: spandrel loads the release file as it is anyway, and this is the same model in its layout."""
    from .loading import clamped_blocks, remove_clamp

    if clamped_blocks(network):
        warnings.warn(
            f"{name}: the spandrel file holds the weights as released, without esr's feature clamp (models.toml clamp_features), "
            "so it turns saturated colour edges into speckle where esr does not; --format onnx carries the clamp",
            EsrWarning,
            stacklevel=3,
        )
    return remove_clamp(network)


def write_spandrel(network: SRNet, path: Path, *, fp16: bool, metadata: Mapping[str, str]) -> None:
    sd = spandrel_state_dict(network, str(path))
    sd = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    if path.suffix.lower() == ".safetensors":
        # No esr.* metadata: it would make esr read the file as its fused layout; spandrel reads keys only.
        write_safetensors(sd, path, {k: v for k, v in metadata.items() if not k.startswith("esr.") or k == "esr.model"})
    else:  # through memory: torch names the archive's folder after the file, here a temporary name
        buffer = io.BytesIO()
        torch.save(sd, buffer)
        path.write_bytes(buffer.getvalue())


def write_esr(network: SRNet, path: Path, *, fp16: bool, metadata: Mapping[str, str]) -> None:
    save_network(network, path, dtype=torch.float16 if fp16 else torch.float32, extra_metadata=metadata)


def check_reload(path: Path, network: SRNet, images: list[tuple[str, np.ndarray]], fp16: bool = False) -> list[Agreement]:
    """Load the written file back through esr (detection, re-fusion, a clamp its metadata asks for) and compare outputs."""
    from .loading import clamp_as_recorded

    reloaded = clamp_as_recorded(load_network(path), path)
    results = []
    for name, pixels in images:
        x = as_input(pixels)
        with torch.inference_mode():
            results.append(agreement(name, pixels, network(x).clamp(0, 1), reloaded(x).clamp(0, 1)))
    return results


# --- the one entry point -----------------------------------------------------------------------


def export_network(
    network: SRNet,
    out: str | Path,
    *,
    fmt: str | None = None,
    fp16: bool = False,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
    check_image: tuple[str, np.ndarray] | None = None,
    protected: tuple[Path, ...] = (),
    name: str = "the model",
    on_stage: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write `network` (inference form) as `fmt` (default: from the suffix), checked before it is renamed
    into place. `protected` are files the export must never replace (the model's own inputs);
    `on_stage` hears what is being done, for a progress display (an ONNX export takes seconds)."""
    stage = on_stage or (lambda _: None)
    out = Path(out)
    fmt = format_for(out, fmt)
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    form = EXPORT_FORMATS[fmt]
    if out.suffix.lower() not in form.suffixes:
        raise ExportError(f"{out}: the {fmt} format is written as {' or '.join(form.suffixes)}; rename the output")
    if any(out.resolve() == p.resolve() for p in protected):
        raise ExportError(f"{out}: is the model's own file; esr never overwrites an input")
    if fmt == "spandrel":
        spandrel_state_dict(network, name)  # refuse a model spandrel cannot load before writing anything
    if out.is_dir():
        raise ExportError(f"{out}: is a folder")
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists (pass --overwrite to replace it)")
    if fmt == "onnx":
        require_onnx()
    network = _copy(network)
    if fmt == "spandrel":
        network = _without_clamp(network, name)
    metadata = {**network_metadata(network), **(metadata or {})}
    images = check_images(check_image)
    checks: list[Agreement] = []
    unchecked = ""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out, keep_suffix=True) as tmp:  # the suffix tells esr's loader what it reads back
            if fmt == "onnx":
                metadata = {**metadata, "esr.opset": str(ONNX_OPSET), "esr.precision": "fp16" if fp16 else "fp32"}
                stage(f"exporting {name} to ONNX (opset {ONNX_OPSET})")
            globals()[form.writer](network, tmp, fp16=fp16, metadata=metadata)  # the table names functions of this module
            if fmt == "onnx":
                stage("checking the ONNX model in onnxruntime")
            try:
                checks = globals()[form.checker](tmp, network, images, fp16)
            except ImportError:
                unchecked = f"onnxruntime is not installed, so the file was not run ({ONNX_EXTRA})"
            bad = [c for c in checks if not c.passes(fp16)]
            if bad:
                allowed = f"{MIN_PSNR:g} dB" if fp16 else f"{MAX_LEVELS} levels, {MIN_PSNR:g} dB"
                raise ExportError(
                    f"{out}: the {fmt} export of {name} does not reproduce esr's output ({bad[0].describe()}; allowed {allowed}); nothing was written"
                )
    except OSError as exc:
        raise ExportError(f"{out}: cannot write ({exc.strerror or exc})") from None
    return ExportResult(out, fmt, out.stat().st_size, checks, unchecked)
