"""esr as a library: open a model once, then upscale PIL images, numpy arrays and torch tensors.

    import esrcli
    model = esrcli.load_model("span-tiny")               # anything -m accepts
    big = model.upscale(Image.open("photo.png"))         # a PIL image of the same mode family
    arr = esrcli.upscale(pixels, scale=2)                # numpy in, numpy out (same dtype and layout)

The CLI is a thin layer over this module: the same pixels come out of both for the same input and
settings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from .batch import ALPHA_MODES, upscale_animation, upscale_picture
from .denoise import AUTO, DenoiseError, mix, parse_strength, partner_of
from .device import resolve_device, resolve_precision, use_fixed_shapes
from .ensemble import SelfEnsemble, check_tta, views_per_call
from .errors import InputError as InputError
from .imagefile import Picture, picture_from_pil, to_8bit
from .imagefile.animation import animation_from_pil, is_animated_pil
from .loading import LoadedModel, load_reference, place
from .refs import ModelRef
from .registry import DEFAULT_MODEL
from .scaling import Pipeline, plan_scale
from .tiling import TilePlan, Upscaler, auto_plan, check_tiling, default_overlap

if TYPE_CHECKING:
    from .export import ExportResult

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray, torch.Tensor)


class Model:
    """A model reference opened on one device in one precision, ready to upscale by any factor.

    `scale` is the factor `upscale` uses by default (the model's own unless given); a registry
    model loads its other native variants when a factor needs them. `tta` (--tta) is whether `upscale`
    and `pipeline` run the x8 self-ensemble by default (esrcli.ensemble): 8x the work, a little sharper."""

    def __init__(
        self,
        ref: str,
        *,
        scale: float | None = None,
        device: str = "auto",
        precision: str = "auto",
        denoise: float | str | None = None,
        progress: bool = False,
        tta: bool = False,
    ) -> None:
        self.ref = ref
        self.tta = check_tta(tta)
        self.model_ref = ModelRef.parse(ref)  # what `ref` names, decided once
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self._progress = progress
        self._variants: dict[tuple[int, float], LoadedModel] = {}
        self._fp32: dict[tuple[int, float], nn.Module] = {}
        use_fixed_shapes(self.device)
        # --denoise: mixing with the registry's robust partner; "auto" (from each input) where there is one
        self.partner_ref = self.model_ref.partner()
        strength = parse_strength(denoise)
        if strength not in (None, 0.0):
            partner_of(self.model_ref)  # refuses a model without one
        self.denoise: float | str = (AUTO if self.partner else 0.0) if strength is None else strength
        self.native: list[int] = list(self.model_ref.scales)
        first = self._variant(plan_scale(self.native, scale).passes[0] if self.native and scale is not None else None)
        if not self.native:
            self.native = [first.scale]
        self.name = first.name
        self.arch = first.arch
        self.source = first.source  # the weight file read (a registry variant's names its SHA-256)
        self.scale: float = first.scale if scale is None else scale  # the factor `upscale` gives by default
        plan_scale(self.native, self.scale)  # an unreachable scale fails here, not at the first image
        self.network: nn.Module = first.network
        self._pipelines: dict[tuple, Pipeline] = {}

    def __repr__(self) -> str:
        return f"Model({self.name!r}, scale={self.scale:g}, device={str(self.device)!r}, dtype={self.dtype})"

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    @property
    def partner(self) -> str:
        """The robust partner's registry name ("" where there is none)."""
        return self.partner_ref.name if self.partner_ref else ""

    def partner_scales(self) -> list[int]:
        return self.partner_ref.scales if self.partner_ref else []

    def _variant(self, scale: int | None, strength: float = 0.0) -> LoadedModel:
        """The network of one native scale (mixed with the robust partner's by `strength`), made once. In
        half precision an fp32 copy is kept too, made from the weights as loaded: tiles that overflow are
        redone with it."""
        if scale is not None and (scale, strength) in self._variants:
            return self._variants[(scale, strength)]
        if strength:
            base = self._variant(scale)
            if base.scale not in self.partner_scales():
                raise DenoiseError(f"{self.ref} x{base.scale}: its robust partner {self.partner} has no x{base.scale} weights to mix with")
            partner = load_reference(self.partner_ref, native=base.scale, device=self.device, progress=self._progress)
            fp32 = self._fp32.get((base.scale, 0.0), base.network)
            loaded = replace(base, network=mix(fp32, partner.network, strength).eval())
        else:
            loaded = load_reference(self.model_ref, native=scale, device=self.device, progress=self._progress)
        if not type(loaded.network).half:  # the architecture says it cannot run in half precision
            self.dtype = torch.float32
        if self.dtype != torch.float32:
            self._fp32[(loaded.scale, strength)] = loaded.network
            loaded.network = place(copy.deepcopy(loaded.network), self.device, self.dtype)
        self._variants[(loaded.scale, strength)] = loaded
        return loaded

    def pipeline(
        self,
        scale: float | None = None,
        *,
        tile: int | None = None,
        overlap: int | None = None,
        batch: int | None = None,
        tiling: Mapping[int, TilePlan] | None = None,
        plan_for: tuple[torch.device, torch.dtype] | None = None,
        denoise: float | str | None = None,
        tta: bool | None = None,
    ) -> Pipeline:
        """The passes and tiling that reach `scale`: tile None plans from the memory free on the device
        (`plan_for`'s, when the model is only opened to plan work for other machines), 0 runs whole images.
        `tiling` (another pipeline's `.tiling`) reuses a plan made elsewhere, so a Ray worker cuts the same
        tiles as the driver and gives the same pixels. `denoise` (default: the model's) is a strength, or
        "auto": then `Pipeline.for_input` picks the pipeline of the strength each input calls for (passes
        at a scale the partner lacks run unmixed). `tta` (default: the model's) runs every pass as the x8
        self-ensemble, decided here once for every tile, batch and pass."""
        check_tiling(tile, overlap, batch)
        tta = self.tta if tta is None else check_tta(tta)
        strength = self.denoise if denoise is None else parse_strength(denoise)
        if strength != 0.0:
            partner_of(self.model_ref)  # refuses a model without one
        target = self.scale if scale is None else scale
        settings = {"tile": tile, "overlap": overlap, "batch": batch, "tiling": tiling, "plan_for": plan_for, "tta": tta}
        if strength == AUTO:  # the unmixed pipeline, which picks another for each input
            key = (target, tuple(sorted((tiling or {}).items())), tile, overlap, batch, plan_for, tta, AUTO)
            if key not in self._pipelines:
                self._pipelines[key] = replace(self._mixed(target, 0.0, **settings), choose=lambda t: self._mixed(target, t, **settings))
            return self._pipelines[key]
        lacking = [s for s in plan_scale(self.native, target).scales if s not in self.partner_scales()]
        if strength and lacking:
            raise DenoiseError(
                f"{self.ref}: its robust partner {self.partner} has no x{lacking[0]} weights to mix with; "
                f"--denoise works at " + ", ".join(f"x{s}" for s in self.partner_scales())
            )
        return self._mixed(target, float(strength), **settings)

    def _mixed(
        self,
        target: float,
        strength: float,
        *,
        tile: int | None,
        overlap: int | None,
        batch: int | None,
        tiling: Mapping[int, TilePlan] | None,
        plan_for: tuple[torch.device, torch.dtype] | None,
        tta: bool = False,
    ) -> Pipeline:
        """The pipeline of one strength (made once): passes at a scale the partner lacks run unmixed. Under
        --tta each pass's network (and its fp32 twin) is wrapped in the self-ensemble, and the tile plan
        budgets for the views that run at once on the device it is made for."""
        device, dtype = plan_for or (self.device, self.dtype)
        key = (target, tile, overlap, batch, tuple(sorted((tiling or {}).items())), device, dtype, strength, tta)
        if key not in self._pipelines:
            plan = plan_scale(self.native, target)
            upscalers = {}
            for s in plan.scales:
                mixed = strength if s in self.partner_scales() else 0.0
                network, fp32 = self._variant(s, mixed).network, self._fp32.get((s, mixed))
                if tta:
                    network = SelfEnsemble(network, per_call=views_per_call(self.device))
                    fp32 = None if fp32 is None else SelfEnsemble(fp32, per_call=views_per_call(self.device))
                if tiling is not None and s in tiling:
                    tiles = tiling[s]
                elif tile is None:
                    auto = auto_plan(network, s, device, dtype, overlap, views=views_per_call(device) if tta else 1)
                    tiles = TilePlan(auto.tile, auto.overlap, batch or auto.batch, whole=auto.whole)
                else:
                    tiles = TilePlan(tile, default_overlap(network) if overlap is None else overlap, batch or 1)
                check_tiling(tiles.tile, tiles.overlap, tiles.batch)
                upscalers[s] = Upscaler(network, s, tiles, fp32=fp32)
            mixed_any = any(s in self.partner_scales() for s in plan.scales)
            self._pipelines[key] = Pipeline(plan, upscalers, strength=strength if mixed_any else 0.0, tta=tta)
        return self._pipelines[key]

    def upscale(
        self,
        image: ImageLike,
        *,
        scale: float | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        alpha: str = "model",
        exif_transpose: bool = True,
        on_tile: Callable[[int], None] | None = None,
        tta: bool | None = None,
    ) -> ImageLike:
        """`image` upscaled by `scale` (default: the model's), in the type and layout it came in.

        A PIL image comes back in the same mode family (L, LA, RGB, RGBA; palette images as RGB(A),
        16-bit grey as I;16), with its ICC profile; a numpy array HxW or HxWxC (C = 1 to 4), uint8
        or uint16, with the same dtype and layout; a float tensor (N)CHW in 0..1 (C = 1 or 3) as a
        tensor on its own device. Transparency goes through the model (`alpha="bicubic"` resamples
        it), and constant, fully opaque and fully transparent areas stay exact.

        As `esr upscale` does with a file, a PIL image's EXIF orientation is applied (the result is
        upright and its EXIF says so; `exif_transpose=False` keeps the stored pixel order). An animated
        PIL image (GIF, WebP, APNG with more than one frame) comes back as a list of upscaled frames,
        each the full canvas as a viewer shows it (RGB, or RGBA where the animation has transparency),
        with its duration in ms in `.info["duration"]` and the loop count in `.info["loop"]` (see
        `upscale_frames`). `tta=True` (default: the model's `tta`) is `--tta`: the mean of the
        8 flips and turns of the input, each upscaled and turned back. Every error is an EsrError."""
        if alpha not in ALPHA_MODES:
            raise InputError(f"alpha {alpha!r}: must be one of {', '.join(map(repr, ALPHA_MODES))}")
        pipeline = self.pipeline(scale, tile=tile, overlap=overlap, tta=tta)
        if isinstance(image, Image.Image):
            if is_animated_pil(image):
                return _upscale_frames(image, pipeline, alpha, on_tile)
            return _upscale_pil(image, pipeline, alpha, on_tile, exif_transpose)
        if isinstance(image, np.ndarray):
            return _upscale_array(image, pipeline, alpha, on_tile)
        if isinstance(image, torch.Tensor):
            return _upscale_tensor(image, pipeline, on_tile)
        raise InputError(f"cannot upscale a {type(image).__name__}: pass a PIL image, a numpy array or a torch tensor")

    def upscale_frames(
        self,
        image: Image.Image,
        *,
        scale: float | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        alpha: str = "model",
        on_tile: Callable[[int], None] | None = None,
        tta: bool | None = None,
    ) -> list[Image.Image]:
        """Every frame of a PIL image upscaled, in order, as `esr upscale` does an animated file: a list
        of PIL images (RGB, or RGBA where any frame has transparency), each the full canvas, with its
        duration (ms) in `.info["duration"]` and the loop count in `.info["loop"]` (0: forever; absent
        if the file said nothing). A still image gives a one-frame list. Save them with
        `frames[0].save(path, save_all=True, append_images=frames[1:], duration=[f.info["duration"] for f in frames])`."""
        if alpha not in ALPHA_MODES:
            raise InputError(f"alpha {alpha!r}: must be one of {', '.join(map(repr, ALPHA_MODES))}")
        if not isinstance(image, Image.Image):
            raise InputError(f"upscale_frames takes a PIL image, not a {type(image).__name__}")
        pipeline = self.pipeline(scale, tile=tile, overlap=overlap, tta=tta)
        return _upscale_frames(image, pipeline, alpha, on_tile)

    def export(
        self,
        path: str | Path,
        *,
        format: str | None = None,
        fp16: bool = False,
        check_image: np.ndarray | None = None,
        overwrite: bool = False,
    ) -> ExportResult:
        """Write the model for ONNX Runtime (.onnx), spandrel/chaiNNer (.pth) or esr (.safetensors), as
        `esr export` does: compared with this model's output on `check_image` (RGB uint8 HxWx3; default
        esr's test card) before it is kept. The result holds the figures of that comparison. A model opened
        with a fixed `denoise` strength exports that mix; under "auto" (per input) the model as it is."""
        from .export import open_source

        native = self.network.scale if self.model_ref.kind == "registry" else None
        denoise = 0.0 if self.denoise == AUTO else float(self.denoise)  # a fixed strength is baked in; auto is per input
        source = open_source(self.model_ref, native=native, denoise=denoise, progress=self._progress)
        picture = None if check_image is None else ("check image", np.ascontiguousarray(check_image[..., :3].astype(np.uint8)))
        return source.export(path, fmt=format, fp16=fp16, overwrite=overwrite, check_image=picture)


def load_model(
    name_or_path: str,
    *,
    scale: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    denoise: float | str | None = None,
    tta: bool = False,
) -> Model:
    """Open a model: a registry name (esr models list), a .pth/.safetensors file, an esr train run
    folder or hf://owner/repo/file. Weights are downloaded, verified and fused once, then cached.
    `denoise` (0..1 or "auto", the default for models with a robust partner) is `--denoise`; `tta` is
    `--tta`, the x8 self-ensemble, for every `upscale` that does not say otherwise."""
    return Model(str(name_or_path), scale=scale, device=device, precision=precision, denoise=denoise, tta=tta)


@lru_cache(maxsize=4)
def _cached_model(name_or_path: str, device: str, precision: str, denoise: float | str | None) -> Model:
    return Model(name_or_path, device=device, precision=precision, denoise=denoise)


def upscale(
    image: ImageLike,
    *,
    model: str = DEFAULT_MODEL,
    scale: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | None = None,
    exif_transpose: bool = True,
    denoise: float | str | None = None,
    tta: bool = False,
) -> ImageLike:
    """Upscale one image with `model` (opened once and kept for later calls); see Model.upscale."""
    model_ = _cached_model(str(model), device, precision, parse_strength(denoise))
    return model_.upscale(image, scale=scale, tile=tile, exif_transpose=exif_transpose, tta=check_tta(tta))


# --- conversions -----------------------------------------------------------------------------


def _upscale_pil(image: Image.Image, pipeline: Pipeline, alpha: str, on_tile: Any, exif_transpose: bool) -> Image.Image:
    picture = picture_from_pil(image, exif_transpose=exif_transpose)
    result = upscale_picture(picture, pipeline, alpha_mode=alpha, on_tile=on_tile)
    out = _to_pil(result)
    if picture.icc_profile:
        out.info["icc_profile"] = picture.icc_profile
    if picture.exif:
        out.info["exif"] = picture.exif  # orientation reset to 1 where it was applied
    return out


def _upscale_frames(image: Image.Image, pipeline: Pipeline, alpha: str, on_tile: Any) -> list[Image.Image]:
    animation = animation_from_pil(image)
    result = upscale_animation(animation, pipeline, alpha_mode=alpha, on_tile=on_tile)
    frames = []
    for frame, duration in zip(result.frames, result.durations):
        out = _to_pil(frame)
        out.info["duration"] = duration
        if result.loop is not None:
            out.info["loop"] = result.loop
        frames.append(out)
    return frames


def _to_pil(picture: Picture) -> Image.Image:
    if picture.bit_depth == 16:
        if picture.pixels.shape[2] == 1 and picture.alpha is None:
            return Image.fromarray(np.ascontiguousarray(picture.pixels[..., 0]))  # uint16 grey: mode I;16
        picture = to_8bit(picture)  # Pillow holds 16 bits only as plain grey
    pixels, alpha = picture.pixels, picture.alpha
    stack = pixels if alpha is None else np.concatenate([pixels, alpha], axis=2)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[stack.shape[2]]
    return Image.fromarray(stack[..., 0] if mode == "L" else np.ascontiguousarray(stack), mode)


def _upscale_array(array: np.ndarray, pipeline: Pipeline, alpha: str, on_tile: Any) -> np.ndarray:
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"numpy images must be uint8 or uint16, not {array.dtype}: {_dtype_advice(array.dtype)}")
    if array.ndim == 2:
        return _upscale_array(array[..., None], pipeline, alpha, on_tile)[..., 0]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or min(array.shape[:2]) < 1:
        raise InputError(f"numpy images must be HxW or HxWxC with C from 1 to 4, not shape {array.shape}")
    colour = 1 if array.shape[2] in (1, 2) else 3
    alpha_plane = np.ascontiguousarray(array[..., colour:]) if array.shape[2] in (2, 4) else None
    picture = Picture(pixels=np.ascontiguousarray(array[..., :colour]), alpha=alpha_plane)
    result = upscale_picture(picture, pipeline, alpha_mode=alpha, on_tile=on_tile)
    return result.pixels if result.alpha is None else np.concatenate([result.pixels, result.alpha], axis=2)


def _dtype_advice(dtype: np.dtype) -> str:
    """What to do with an array of another dtype, by its kind."""
    if dtype.kind == "b":
        return "multiply by 255 and cast to uint8 (True = white)"
    if dtype.kind == "f":
        return "for values in 0..1 multiply by 255 (or 65535), round and cast to uint8 (uint16)"
    if dtype.kind in "iu":
        return "clip to 0..255 (or 0..65535) and cast to uint8 (uint16), after scaling if the range is another"
    return "convert to uint8 or uint16 pixels"


def _upscale_tensor(tensor: torch.Tensor, pipeline: Pipeline, on_tile: Any) -> torch.Tensor:
    if not tensor.is_floating_point() or tensor.ndim not in (3, 4) or tensor.shape[-3] not in (1, 3):
        raise InputError(f"tensors must be float (N)CHW with C = 1 or 3 in 0..1, not {tensor.dtype} of shape {tuple(tensor.shape)}")
    if min(tensor.shape[-2:]) < 1:
        raise InputError(f"tensor of shape {tuple(tensor.shape)} has no pixels")
    if not bool(torch.isfinite(tensor).all()):
        raise InputError("tensor holds NaN or infinite values: pixels must be finite, in 0..1")
    batch = tensor[None] if tensor.ndim == 3 else tensor
    if pipeline.choose is not None:  # --denoise auto: measured on the first image, as 8-bit pixels
        pipeline, _ = pipeline.for_input((batch[0].detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())
    first = pipeline.upscalers[pipeline.plan.passes[0]]
    h, w = batch.shape[-2:]
    if len(pipeline.plan.passes) == 1 and not pipeline.plan.resample and first.count_tiles(h, w) == 1 and first.device == tensor.device:
        with torch.inference_mode():  # whole images on the model's own device: no round trip through the CPU
            x = batch.to(first.dtype).expand(-1, 3, -1, -1)
            y = first.network(x).float().clamp(0, 1)
            y = y.mean(dim=1, keepdim=True) if batch.shape[1] == 1 else y
        if on_tile:
            on_tile(1)
        out = y.to(tensor.dtype)
    else:
        frames = [f.permute(1, 2, 0).float().clamp(0, 1).cpu().numpy() for f in batch]
        ups = [pipeline.run(np.ascontiguousarray(f), on_tile) for f in frames]
        out = torch.stack([torch.from_numpy(u).permute(2, 0, 1) for u in ups]).to(device=tensor.device, dtype=tensor.dtype)
    return out[0] if tensor.ndim == 3 else out
