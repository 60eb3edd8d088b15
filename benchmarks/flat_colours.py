"""Saturated colour edges: the speckle the NTIRE SPAN releases make on screenshots, and esr's feature clamp.

Usage: python benchmarks/flat_colours.py [--shared ../shared] [--out docs/flat_colours.png] [--quick]
       python benchmarks/flat_colours.py --calibrate     (re-make esrcli/weights/feature_bounds.safetensors)

1. Draws lossless test pictures (flat saturated fields with aliased text and strokes, R|G|B bars, black
   text on white, pure green against texture) and runs span-tiny as released, esr-tiny, span-tiny with
   esr's clamp (the registry default), and span-ntire24 both ways. Writes a labelled grid of enlarged crops.
2. Prints the damage: in flat regions (every LR pixel within FLAT_DISTANCE the same colour, away from the
   picture border) the largest deviation from the flat colour and the count of output pixels more than
   SPECKLE_LEVELS off; the same 1 to 2 LR pixels from edges (halos, ringing); the raw float output range.
   Then the same for every NTIRE SPAN-family release raw and clamped, and for span-tiny with its input
   range compressed by a margin (x' = a + (1 - 2a) x, y = (y' - a) / (1 - 2a)): the mitigation that fails.
3. Prints the clamp's cost in forward time (480x270, interleaved runs, best of 8), and Set5 and Set14 Y-PSNR (x4, the papers' protocol: esrcli.bench.evaluate_set, as `esr bench
   quality`) of each, raw and mitigated. --quick skips everything but span-tiny and span-ntire24.

--calibrate measures, for every registry model with `clamp_features = true` (embedded ones included), the per-channel range of each
SPAB block's output and of each conv in it, on the training photographs (../shared/data/train: T91 as it is
and reduced x4, BSD200 reduced x2 and x4, Photos2K reduced x4, with MATLAB bicubic), and writes it where esr's loader reads it (about a minute a model on
2 CPU cores; the result is deterministic: a rerun writes the same bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load_file
from torch import Tensor, nn

from esrcli.bench import evaluate_set
from esrcli.imagefile import read_rgb8
from esrcli.imresize import bicubic_downscale_uint8, mod_crop
from esrcli.loading import FEATURE_BOUNDS, clamp_sites, clamped_blocks, fetch_model, import_model_file, load_reference
from esrcli.registry import default_registry, embedded_source
from esrcli.weights import load_network, write_safetensors

SCALE = 4
FLAT_DISTANCE = 3  # LR pixels from any other colour (and from the picture border): beyond any ringing of a sane model
SPECKLE_LEVELS = 8  # an output pixel this far from its flat colour (largest channel, 8-bit levels) is a speckle
HALO_LEVELS = 16  # nearer an edge a sharp model may overshoot a little: halo pixels are counted past this
MARGINS = (2, 4, 8, 16, 32)  # input margins tried, in levels of 255
AFFECTED = ("span-tiny", "span-ntire24", "dsclora", "span-slimtail", "espan", "spanf")
CROP, ZOOM = 36, 1.75  # the grid shows a CROP x CROP LR window of each picture (x4 by each method), enlarged ZOOM times


# --- test pictures ---------------------------------------------------------------------------


def bitmap_font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font: aliased glyphs in exactly the fill colour, as in a lossless screenshot."""
    loader = getattr(ImageFont, "load_default_imagefont", None)  # Pillow 10.1+; before, load_default is the bitmap font
    return loader() if loader else ImageFont.load_default()


def text_field(background: tuple[int, int, int], ink: tuple[int, int, int], size: tuple[int, int] = (96, 72)) -> np.ndarray:
    """A flat field with lines of text, a 1 px diagonal, a 2 px stroke and a small box: a UI screenshot."""
    image = Image.new("RGB", size, background)
    draw, font = ImageDraw.Draw(image), bitmap_font()
    draw.text((8, 8), "Settings 42%", fill=ink, font=font)
    draw.text((8, 22), "esr x4 OK", fill=ink, font=font)
    draw.line((8, 48, 40, 60), fill=ink, width=1)
    draw.line((50, 44, 86, 44), fill=ink, width=2)
    draw.rectangle((56, 54, 62, 60), fill=ink)
    return np.array(image)


def two_fields(left: tuple[int, int, int], right: tuple[int, int, int], ink: tuple[int, int, int]) -> np.ndarray:
    """Two flat fields side by side with text in each: cyan and yellow, the two blotch cases."""
    return np.concatenate([text_field(left, ink, (64, 72)), text_field(right, ink, (64, 72))], axis=1)


def rgb_bars(height: int = 72, width: int = 32) -> np.ndarray:
    """Pure red | green | blue bars: stripe ringing appears along their borders."""
    bars = np.zeros((height, 3 * width, 3), np.uint8)
    for i in range(3):
        bars[:, i * width : (i + 1) * width, i] = 255
    return bars


def green_on_texture(size: int = 96, seed: int = 0) -> np.ndarray:
    """Pure green (91, 250, 0), whose blue clips to 0, against a photo-like 1/f texture."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    planes = []
    for _ in range(3):
        plane = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((size, size)))))
        planes.append((plane - plane.min()) / np.ptp(plane))
    image = (50 + 150 * np.stack(planes, axis=2)).astype(np.uint8)
    image[24:72, 24:72] = (91, 250, 0)
    return image


def pictures() -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    """The test pictures, LR (what a user hands to esr), RGB uint8, each with the corner (x, y) the grid shows."""
    return {
        "blue, yellow text": (text_field((0, 0, 255), (255, 255, 0)), (0, 0)),
        "cyan | yellow, black text": (two_fields((0, 255, 255), (255, 255, 0), (0, 0, 0)), (46, 0)),
        "red | green | blue": (rgb_bars(), (14, 18)),
        "black text on white": (text_field((255, 255, 255), (0, 0, 0)), (0, 0)),
        "green (91,250,0) on texture": (green_on_texture(), (8, 8)),
    }


# --- damage metrics ------------------------------------------------------------------------------


def flat_mask(lr: np.ndarray, distance: int = FLAT_DISTANCE) -> np.ndarray:
    """HR pixels whose LR pixel and every LR pixel within `distance` (Chebyshev) share one colour,
    `distance` or more from the picture border (where the network's zero padding is an edge too)."""
    x = torch.from_numpy(lr).permute(2, 0, 1).float()
    padded = F.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]
    differs = torch.zeros(lr.shape[:2], dtype=torch.bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[:, 1 + dy : 1 + dy + lr.shape[0], 1 + dx : 1 + dx + lr.shape[1]]
            differs |= (shifted != x).any(0)
    edge = F.pad(differs.float()[None, None], (distance,) * 4, value=1.0)  # the border counts as an edge
    near = F.max_pool2d(edge, 2 * distance + 1, stride=1)[0, 0] > 0
    flat = (~near).numpy()
    return flat.repeat(SCALE, 0).repeat(SCALE, 1)


def damage(lr: np.ndarray, out: Tensor) -> dict[str, float]:
    """The largest deviation from the flat colour and the speckle count, in flat regions and in the halo band
    (1 to FLAT_DISTANCE - 1 LR pixels from an edge, where ringing shows), and the raw float output range.

    `out` is the network's float output (1, 3, H, W) before esr's clamp to 0..1. (Against a bicubic upscale
    every sharp model differs by 200 levels along aliased text, so that comparison tells nothing here.)"""
    raw = out[0].permute(1, 2, 0).double().numpy()
    deviation = np.abs(np.clip(np.round(raw * 255), 0, 255) - lr.repeat(SCALE, 0).repeat(SCALE, 1)).max(axis=2)
    flat = flat_mask(lr)
    flat_dev, halo = deviation[flat], deviation[flat_mask(lr, 1) & ~flat]
    return {
        "flat_max": float(flat_dev.max()),
        "speckles": int((flat_dev > SPECKLE_LEVELS).sum()),
        "halo_max": float(halo.max()),
        "halo_pixels": int((halo > HALO_LEVELS).sum()),
        "raw_min": float(raw.min()),
        "raw_max": float(raw.max()),
    }


# --- networks ------------------------------------------------------------------------------------


class InputMargin(nn.Module):
    """The mitigation that was tried and failed: squeeze the input into [a, 1 - a] and stretch the output back."""

    def __init__(self, network: nn.Module, margin: float) -> None:
        super().__init__()
        self.network, self.margin = network, margin

    def forward(self, x: Tensor) -> Tensor:
        a = self.margin
        return (self.network(a + (1 - 2 * a) * x) - a) / (1 - 2 * a)


def shared_files(shared: Path) -> dict[str, Path]:
    """SHA-256 -> release file in ../shared/weights."""
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in sorted((shared / "weights").glob("*.pth"))}


def release_files(shared: Path) -> dict[str, Path]:
    """Registry name -> the release file in ../shared/weights with that entry's pinned SHA-256 (default scale)."""
    by_hash = shared_files(shared)
    return {e.name: by_hash[e.weights[0].sha256] for e in default_registry() if e.weights[0].sha256 in by_hash}


def registry_network(name: str, files: dict[str, Path]) -> nn.Module:
    """`name` as esr runs it (the registry's clamp included), the cache filled from ../shared when empty."""
    entry = default_registry().get(name)
    weights = entry.variant()
    try:
        fetch_model(entry, weights, progress=False)
    except Exception:  # offline: what `esr models fetch NAME --file` does
        import_model_file(entry, weights, files[name])
    return load_reference(name, progress=False).network


@torch.inference_mode()
def forward(network: nn.Module, lr: np.ndarray) -> Tensor:
    return network(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255.0)


def to_uint8(out: Tensor) -> np.ndarray:
    return (out[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


# --- calibration ---------------------------------------------------------------------------------


def calibration_pictures(train: Path) -> Iterator[np.ndarray]:
    """Photographs at the sizes a user hands esr: T91 as it is, BSD200 reduced x2, and all three sets reduced
    x4 (MATLAB bicubic, as benchmark LR images are made)."""
    for folder, reductions in (("T91", (1, 4)), ("BSD200", (2, 4)), ("Photos2K", (4,))):
        for path in sorted(p for p in (train / folder).iterdir() if p.suffix.lower() in (".png", ".bmp")):
            hr = mod_crop(read_rgb8(path), SCALE)
            for reduction in reductions:
                yield hr if reduction == 1 else bicubic_downscale_uint8(hr, reduction)


def site_ranges(network: nn.Module, inputs: Iterator[np.ndarray]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-channel (min, max) over `inputs` of every output esr's clamp holds (esrcli.loading.clamp_sites)."""
    ranges: dict[str, tuple[Tensor, Tensor]] = {}

    def record(name: str) -> Callable[[nn.Module, object, Tensor | tuple[Tensor, Tensor]], None]:
        def hook(_module: nn.Module, _inputs: object, output: Tensor | tuple[Tensor, Tensor]) -> None:
            value = output[0] if isinstance(output, tuple) else output  # a SPAB hands on (output, SiLU tap)
            low, high = value.amin(dim=(0, 2, 3)), value.amax(dim=(0, 2, 3))
            if name in ranges:
                low, high = torch.minimum(ranges[name][0], low), torch.maximum(ranges[name][1], high)
            ranges[name] = (low, high)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in clamp_sites(network).items()]
    try:
        for picture in inputs:
            forward(network, picture)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def calibrate(shared: Path) -> None:
    """Per-channel min and max of every SPAB output over the calibration photographs, for each clamped model."""
    files = shared_files(shared)
    tensors: dict[str, Tensor] = {}
    described: dict[str, str] = {}
    for entry in default_registry():
        if not entry.clamp_features:
            continue
        for weights in entry.weights:
            packaged = embedded_source(weights)  # an embedded model (esr-tiny) is its own release file
            path = packaged.file if packaged is not None else files.get(weights.sha256)
            if path is None:
                raise SystemExit(f"{entry.name} x{weights.scale}: no file with SHA-256 {weights.sha256[:16]}… in {shared / 'weights'}")
            started = time.perf_counter()
            done = Path(tempfile.gettempdir()) / "esr-feature-bounds" / f"{weights.sha256}.safetensors"  # a rerun resumes
            if done.is_file():
                table = load_file(str(done))
                ranges = {name: (table[f"{name}/low"], table[f"{name}/high"]) for name in {k.rsplit("/", 1)[0] for k in table}}
            else:
                ranges = site_ranges(load_network(path).eval(), calibration_pictures(shared / "data" / "train"))
                done.parent.mkdir(parents=True, exist_ok=True)
                write_safetensors(
                    {f"{n}/{k}": v.contiguous() for n, (lo, hi) in ranges.items() for k, v in (("low", lo), ("high", hi))}, done
                )
            for name, (low, high) in ranges.items():
                tensors[f"{weights.sha256}/{name}/low"] = low.contiguous()
                tensors[f"{weights.sha256}/{name}/high"] = high.contiguous()
            described[weights.sha256] = f"{entry.name} x{weights.scale}"
            print(f"{entry.name} x{weights.scale}: {len(ranges)} outputs, {time.perf_counter() - started:.0f} s", flush=True)
    metadata = {
        "esr.calibration": "per-channel min and max of each SPAB block's output and of each conv in it, over ../shared/data/train "
        "(T91 as is and x4, BSD200 x2 and x4, Photos2K x4, MATLAB bicubic); made by benchmarks/flat_colours.py --calibrate",
        "esr.models": json.dumps(described, sort_keys=True),
    }
    write_safetensors(tensors, FEATURE_BOUNDS, metadata)
    print(f"wrote {FEATURE_BOUNDS} ({FEATURE_BOUNDS.stat().st_size} bytes)")


# --- report --------------------------------------------------------------------------------------


def label_panel(picture: np.ndarray, label: str, width: int) -> np.ndarray:
    band = Image.new("RGB", (width, 16), (255, 255, 255))
    ImageDraw.Draw(band).text((3, 2), label, fill=(0, 0, 0), font=bitmap_font())
    return np.concatenate([np.array(band), picture], axis=0)


def grid(rows: list[tuple[str, tuple[int, int], list[tuple[str, np.ndarray]]]], out: Path) -> None:
    """One row per picture: its CROP x CROP LR window at `corner` (x, y), x4 by each method, enlarged ZOOM
    times (nearest neighbour, so every speckle stays visible), labelled."""
    side, shown = CROP * SCALE, round(CROP * SCALE * ZOOM)
    blocks = []
    for title, (x, y), panels in rows:
        cells = []
        for label, hr in panels:
            window = np.ascontiguousarray(hr[y * SCALE : y * SCALE + side, x * SCALE : x * SCALE + side])
            crop = Image.fromarray(window).resize((shown, shown), Image.Resampling.NEAREST)
            cells.append(label_panel(np.array(crop), label, shown))
            cells.append(np.full((cells[-1].shape[0], 4, 3), 255, np.uint8))
        row = np.concatenate(cells[:-1], axis=1)
        blocks.append(label_panel(row, title, row.shape[1]))
        blocks.append(np.full((6, row.shape[1], 3), 255, np.uint8))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(blocks[:-1], axis=0)).save(out, optimize=True)


def print_damage(title: str, results: dict[str, dict[str, dict[str, float]]]) -> None:
    names = list(next(iter(results.values())))
    print(f"\n{title}")
    print(
        f"  flat regions ({FLAT_DISTANCE}+ LR px from edges): largest deviation from the flat colour / pixels off by > {SPECKLE_LEVELS} levels"
    )
    print(f"{'':32s}" + "".join(f"{n[:22]:>24s}" for n in names))
    for method, per_picture in results.items():
        print(f"{method:32s}" + "".join(f"{per_picture[n]['flat_max']:>15.0f} / {per_picture[n]['speckles']:<6d}" for n in names))
    print(f"  halo band (1-{FLAT_DISTANCE - 1} LR px from edges): the same, pixels off by > {HALO_LEVELS} levels; raw float output range")
    for method, per_picture in results.items():
        print(
            f"{method:32s}"
            + "".join(
                f"{r['halo_max']:>5.0f} /{r['halo_pixels']:<6d}[{r['raw_min']:5.0f},{r['raw_max']:4.0f}]"
                for r in (per_picture[n] for n in names)
            )
        )


def psnr_row(network: nn.Module, benchmark: Path) -> tuple[float, float]:
    scores = [evaluate_set(network, SCALE, benchmark / s, channel="y", with_ssim=False).psnr for s in ("Set5", "Set14")]
    return scores[0], scores[1]


@torch.inference_mode()
def clamp_cost(clamped: nn.Module, released: nn.Module, size: tuple[int, int] = (270, 480), repeats: int = 8) -> float:
    """Forward time with the clamp over without, on a `size` (h, w) input: interleaved, best of `repeats` each."""
    x = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
    best = {"clamped": float("inf"), "released": float("inf")}
    for _ in range(repeats):
        for label, network in (("clamped", clamped), ("released", released)):
            started = time.perf_counter()
            network(x)
            best[label] = min(best[label], time.perf_counter() - started)
    return best["clamped"] / best["released"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=Path(__file__).resolve().parents[2] / "shared", type=Path)
    parser.add_argument("--out", default=Path("docs/flat_colours.png"), type=Path)
    parser.add_argument("--quick", action="store_true", help="span-tiny and span-ntire24 only; no input-margin PSNR")
    parser.add_argument("--calibrate", action="store_true", help="re-make the packaged feature bounds and stop")
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    if args.calibrate:
        calibrate(args.shared)
        return
    files = release_files(args.shared)
    pics = {title: lr for title, (lr, _) in pictures().items()}
    raw = {name: load_network(files[name]).eval() for name in AFFECTED if name in files}
    clamped = {name: registry_network(name, files) for name in raw}
    esr_tiny = load_reference("esr-tiny", progress=False).network
    for name, network in clamped.items():
        assert clamped_blocks(network), f"{name}: the registry's clamp is not applied"

    outputs = {"span-tiny (as released)": raw["span-tiny"], "esr-tiny": esr_tiny, "span-tiny (esr's clamp)": clamped["span-tiny"]}
    outputs |= {"span-ntire24 (as released)": raw["span-ntire24"], "span-ntire24 (esr's clamp)": clamped["span-ntire24"]}
    rows, results = [], {}
    for title, (lr, corner) in pictures().items():
        panels = [("input (nearest)", lr.repeat(SCALE, 0).repeat(SCALE, 1))]
        for method, network in outputs.items():
            out = forward(network, lr)
            results.setdefault(method, {})[title] = damage(lr, out)
            panels.append((method, to_uint8(out)))
        rows.append((title, corner, panels))
    grid(rows, args.out)
    print(f"wrote {args.out}")
    print_damage("Damage on the test pictures", results)

    names = ("span-tiny", "span-ntire24") if args.quick else tuple(raw)
    every = {}
    for name in names:
        every[f"{name} (as released)"] = {t: damage(lr, forward(raw[name], lr)) for t, lr in pics.items()}
        every[f"{name} (esr's clamp)"] = {t: damage(lr, forward(clamped[name], lr)) for t, lr in pics.items()}
    every["esr-tiny"] = results["esr-tiny"]
    print_damage("Every NTIRE SPAN-family release", every)
    margins = {f"span-tiny, input margin {m}/255": InputMargin(raw["span-tiny"], m / 255) for m in MARGINS}
    print_damage("Input margins (span-tiny)", {k: {t: damage(lr, forward(n, lr)) for t, lr in pics.items()} for k, n in margins.items()})

    for name in names:
        print(f"\n{name}: forward time with the clamp / as released, 480x270 input: {clamp_cost(clamped[name], raw[name]):.3f}x")

    benchmark = args.shared / "data" / "benchmark"
    print("\nSet5 / Set14 Y-PSNR (x4, 4 px border, MATLAB bicubic LR): as released, mitigated, difference")
    for name in names:
        before, after = psnr_row(raw[name], benchmark), psnr_row(clamped[name], benchmark)
        diff = " ".join(f"{a - b:+.4f}" for a, b in zip(after, before))
        print(f"  {name:14s} {before[0]:.4f} / {before[1]:.4f}  clamp {after[0]:.4f} / {after[1]:.4f}  ({diff} dB)", flush=True)
    if not args.quick:
        before = psnr_row(raw["span-tiny"], benchmark)
        for label, network in margins.items():
            after = psnr_row(network, benchmark)
            diff = " ".join(f"{a - b:+.4f}" for a, b in zip(after, before))
            print(f"  {label:34s} {after[0]:.4f} / {after[1]:.4f}  ({diff} dB)", flush=True)


if __name__ == "__main__":
    main()
