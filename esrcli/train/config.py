"""Training configuration: dataclasses read from TOML (stdlib tomllib), with dotted overrides.

One config describes a run completely and is written to RUN_DIR/config.toml, so a run can be
resumed, exported and reproduced from its folder alone.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError as ConfigError
from ..errors import TrainingError as TrainingError

# The files of a run folder.
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.toml"
METRICS = "metrics.jsonl"


@dataclass
class ModelConfig:
    arch: str = "span"  # span | efdn | espan | spanf
    scale: int = 4
    form: str = "train"  # "train": re-parameterisable branches, fused at export; "fused": plain convs
    args: dict[str, Any] = field(default_factory=dict)  # constructor arguments, e.g. channels
    # Start from these weights (registry name, file or run folder) wherever names and shapes match,
    # e.g. an x2 model from a trained x4 one: everything but the upsampler carries over.
    init: str = ""


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # HR folders, or folders with HR/ and LR_bicubic/X{s}/
    val: str = ""  # a set folder (HR/, optional LR_bicubic/X{s}/) or a folder of HR images
    val_limit: int = 0  # 0 = every image
    lr_patch: int = 48  # LR crop size; HR crops are lr_patch * scale
    # Synthetic graphics pictures (384 px: flat saturated colours, text, strokes; train.graphics) added to
    # the training images; patches are drawn by area, so 64 of them beside 82 MP of photos are a tenth.
    graphics: int = 0
    batch: int = 16  # per process
    # DataLoader worker processes: "auto" = the cores the training process leaves free (data.resolve_workers)
    workers: int | str = "auto"


@dataclass
class LossConfig:
    l1: float = 1.0
    l2: float = 0.0
    charbonnier: float = 0.0
    gv: float = 0.0  # EFDN's gradient-variance loss, weighted by gv_x/gv_y/gv_l inside
    gv_x: float = 1.0
    gv_y: float = 1.0
    gv_l: float = 1.0
    freq: float = 0.0  # ESPAN's frequency-aware loss: L2 + freq_alpha * HF + freq_beta * DCT
    freq_alpha: float = 1.0
    freq_beta: float = 0.001
    # LR pixels at each edge of a training patch that no loss sees. A conv net zero-pads every layer,
    # so near a patch's edge its output depends on where the patch was cut; in a whole image that
    # happens only at the image's own edges. Without a border a finetune on small patches mostly
    # learns the patch edges (SPAN-tiny: 75% of a 32 px patch lies within 8 px of an edge).
    border: int = 0


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | multistep
    milestones: list[int] = field(default_factory=list)  # multistep: steps at which lr *= gamma
    gamma: float = 0.5
    warmup: int = 0  # linear warm-up steps
    min_lr: float = 1e-6  # cosine floor
    clip: float = 0.0  # gradient-norm clipping, 0 = off
    ema: float = 0.999  # EMA decay of the weights, 0 = off


@dataclass
class RunConfig:
    steps: int = 1000
    seed: int = 0
    device: str = "auto"
    amp: str = "none"  # none | auto (bf16 where the device computes it natively, else none) | bf16 | fp16 (CUDA only)
    channels_last: bool = True
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 20
    val_every: int = 500
    ckpt_every: int = 500


@dataclass
class RecipeConfig:
    name: str = "plain"  # plain | espan-sd (ESPAN self-distillation with progressive shrinking)
    extra_blocks: int = 2  # espan-sd: teacher depth = student depth + extra_blocks
    sd_weight: float = 0.001
    sd_margin: float = 0.01
    shrink_every: int = 0  # espan-sd: drop one extra block every N steps (0 = steps / (extra_blocks + 1))


# Where the released DSCLoRA training code puts adapters in SPAN: every block conv r=2/alpha=4, the
# conv before the pixel shuffle and the pixel-shuffle conv r=8/alpha=16; conv_1 and conv_cat frozen.
DSCLORA_GROUPS: tuple[dict[str, Any], ...] = (
    {"pattern": "block_*.c?_r.eval_conv", "rank": 2, "alpha": 4.0},
    {"pattern": "conv_2.eval_conv", "rank": 8, "alpha": 16.0},
    {"pattern": "upsampler.0", "rank": 8, "alpha": 16.0},
)
# Where its affinity distillation taps the features: the pre-activation convs of blocks 1 to 3.
DSCLORA_TAPS: tuple[str, ...] = ("block_1.c?_r", "block_2.c?_r", "block_3.c?_r")


@dataclass
class LoraConfig:
    """esr finetune-lora: a frozen student with ConvLoRA adapters, supervised by a frozen teacher."""

    student: str = ""  # registry name, weight file or run folder; empty = not a LoRA run
    teacher: str = ""
    groups: list[dict[str, Any]] = field(default_factory=lambda: [dict(g) for g in DSCLORA_GROUPS])
    taps: list[str] = field(default_factory=lambda: list(DSCLORA_TAPS))
    teacher_weight: float = 1.0  # L1(SR_student, SR_teacher); loss.l1 weighs L1(SR_student, HR)
    # Spatial affinity. FAKD's 0.5 / 0.5 / 10 on 0..255 images would be 1 / 1 / 0.08 on 0..1 images, but
    # between two different networks the nine affinity distances sum to ~1 (vs L1 ~0.006), and 0.08 cost
    # SPAN-tiny 0.4 dB (measured); 0.002 keeps the term beside the L1 terms.
    affinity_weight: float = 0.002
    affinity_chunk: int = 1024  # rows of the N x N affinity built at once


@dataclass
class DistillConfig:
    """`esr train` supervised by a stronger network as well as the HR: weight * L1(SR, SR_teacher).

    The teacher labels every training image once, before the first step (its output on the image's
    bicubic LR, kept as 8-bit pixels beside the HR), so a step costs what it costs without it."""

    teacher: str = ""  # registry name, weight file or run folder; empty = no teacher
    weight: float = 1.0


@dataclass
class DegradationConfig:
    """How training LR is made from HR. preset "none" turns it off (plain MATLAB bicubic).

    Fields left unset (None) take the preset's value; see PRESETS. Ranges are [low, high] and
    drawn uniformly; `*_kernels` and `*_modes` are {name: weight}."""

    preset: str = "none"  # none | jpeg | light | realesrgan
    # first order
    blur_prob: float | None = None
    kernel_size: list[int] | None = None  # odd sizes, [smallest, largest]
    kernels: dict[str, float] | None = None  # iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso, sinc
    sigma: list[float] | None = None
    beta_generalized: list[float] | None = None
    beta_plateau: list[float] | None = None
    resize_probs: list[float] | None = None  # up, down, keep
    resize_range: list[float] | None = None
    resize_modes: dict[str, float] | None = None  # area, bilinear, bicubic
    noise_prob: float | None = None
    gaussian_noise_prob: float | None = None  # else Poisson
    noise_sigma: list[float] | None = None  # Gaussian, 0..255 scale
    poisson_scale: list[float] | None = None
    gray_noise_prob: float | None = None
    jpeg_prob: float | None = None
    jpeg_range: list[float] | None = None
    # second order
    second_order_prob: float | None = None
    blur_prob2: float | None = None
    sigma2: list[float] | None = None
    resize_probs2: list[float] | None = None
    resize_range2: list[float] | None = None
    noise_sigma2: list[float] | None = None
    poisson_scale2: list[float] | None = None
    jpeg_range2: list[float] | None = None
    # the last resize to HR / scale
    final_modes: dict[str, float] | None = None  # area, bilinear, bicubic, matlab (MATLAB's antialiased bicubic)
    final_sinc_prob: float | None = None

    @property
    def enabled(self) -> bool:
        return self.preset != "none"

    def resolved(self) -> dict[str, Any]:
        """Every field's value: the explicit ones over the preset's."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown degradation preset '{self.preset}' (known: {', '.join(PRESETS)})")
        values = dict(PRESETS[self.preset])
        values.update({f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})
        return values


# Hand-wrapped table: ruff's trailing `` does not keep multi-line entries.
_REALESRGAN: dict[str, Any] = {
    # The ranges of the Real-ESRGAN paper (first and second order).
    "blur_prob": 1.0,
    "kernel_size": [7, 21],
    "kernels": {
        "iso": 0.45,
        "aniso": 0.25,
        "generalized_iso": 0.12,
        "generalized_aniso": 0.03,
        "plateau_iso": 0.12,
        "plateau_aniso": 0.03,
        "sinc": 0.1,
    },
    "sigma": [0.2, 3.0],
    "beta_generalized": [0.5, 4.0],
    "beta_plateau": [1.0, 2.0],
    "resize_probs": [0.2, 0.7, 0.1],
    "resize_range": [0.15, 1.5],
    "resize_modes": {"area": 1.0, "bilinear": 1.0, "bicubic": 1.0},
    "noise_prob": 1.0,
    "gaussian_noise_prob": 0.5,
    "noise_sigma": [1.0, 30.0],
    "poisson_scale": [0.05, 3.0],
    "gray_noise_prob": 0.4,
    "jpeg_prob": 1.0,
    "jpeg_range": [30.0, 95.0],
    "second_order_prob": 1.0,
    "blur_prob2": 0.8,
    "sigma2": [0.2, 1.5],
    "resize_probs2": [0.3, 0.4, 0.3],
    "resize_range2": [0.3, 1.2],
    "noise_sigma2": [1.0, 25.0],
    "poisson_scale2": [0.05, 2.5],
    "jpeg_range2": [30.0, 95.0],
    "final_modes": {"area": 1.0, "bilinear": 1.0, "bicubic": 1.0},
    "final_sinc_prob": 0.8,
}

# Hand-wrapped table: ruff's trailing `` does not keep multi-line entries.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # JPEG alone: MATLAB bicubic, then quality 30-95 (85% of samples); the rest stay clean.
    "jpeg": {
        **_REALESRGAN,
        "blur_prob": 0.0,
        "resize_probs": [0.0, 0.0, 1.0],
        "noise_prob": 0.0,
        "jpeg_prob": 0.85,
        "second_order_prob": 0.0,
        "final_modes": {"matlab": 1.0},
        "final_sinc_prob": 0.0,
    },
    # What photos and video frames carry, at strengths that keep clean inputs sharp: mild blur (40%),
    # noise (40%), JPEG (70%), no second order; a fifth of samples stay clean bicubic.
    "light": {
        **_REALESRGAN,
        "blur_prob": 0.4,
        "kernel_size": [7, 15],
        "kernels": {"iso": 0.6, "aniso": 0.3, "generalized_iso": 0.05, "plateau_iso": 0.05},
        "sigma": [0.2, 1.6],
        "resize_probs": [0.0, 0.0, 1.0],
        "noise_prob": 0.4,
        "gaussian_noise_prob": 0.8,
        "noise_sigma": [1.0, 12.0],
        "poisson_scale": [0.05, 1.0],
        "jpeg_prob": 0.7,
        "jpeg_range": [35.0, 95.0],
        "second_order_prob": 0.0,
        "final_modes": {"matlab": 0.6, "area": 0.2, "bicubic": 0.2},
        "final_sinc_prob": 0.05,
    },
    "realesrgan": _REALESRGAN,
}


SECTIONS = {
    "model": ModelConfig,
    "degradation": DegradationConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "recipe": RecipeConfig,
    "lora": LoraConfig,
    "distill": DistillConfig,
}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and v >= low


def _one_of(*names: str) -> Callable[[Any], bool]:
    return lambda v: v in names


def _probability(v: Any) -> bool:
    return _finite(v) and 0 <= v <= 1


# What each setting may be: checked once before a run starts, so a bad value is one line, not a crash.
# Hand-wrapped table: ruff's trailing `` does not keep multi-line entries.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model.arch": (_one_of("span", "efdn", "espan", "spanf"), "span, efdn, espan or spanf"),
    "model.scale": (lambda v: isinstance(v, int) and 2 <= v <= 8, "an integer from 2 to 8"),
    "model.form": (_one_of("train", "fused"), "train or fused"),
    "data.train": (lambda v: all(isinstance(x, str) for x in v), "a list of folders"),
    "data.val_limit": (_at_least(0), "0 or more"),
    "data.lr_patch": (lambda v: isinstance(v, int) and 4 <= v <= 1024, "an integer from 4 to 1024"),
    "data.batch": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    "data.graphics": (lambda v: isinstance(v, int) and v >= 0, "0 or more pictures"),
    "data.workers": (
        lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
        "0 or more, or auto (the cores the training process leaves free)",
    ),
    "loss.border": (lambda v: isinstance(v, int) and v >= 0, "0 or more"),
    "optim.name": (_one_of("adam", "adamw"), "adam or adamw"),
    "optim.lr": (lambda v: _finite(v) and 0 < v <= 10, "a number above 0 (and at most 10)"),
    "optim.betas": (lambda v: len(v) == 2 and all(_finite(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "optim.weight_decay": (_at_least(0), "0 or more"),
    "optim.schedule": (_one_of("cosine", "multistep"), "cosine or multistep"),
    "optim.milestones": (lambda v: all(isinstance(m, int) and m >= 0 for m in v), "a list of step numbers"),
    "optim.gamma": (lambda v: _finite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "optim.warmup": (lambda v: isinstance(v, int) and v >= 0, "0 or more steps"),
    "optim.min_lr": (_at_least(0), "0 or more"),
    "optim.clip": (_at_least(0), "0 (off) or more"),
    "optim.ema": (lambda v: _finite(v) and 0 <= v < 1, "0 (off) or a decay below 1"),
    "run.steps": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    "run.seed": (lambda v: isinstance(v, int) and 0 <= v < 2**32, "an integer from 0 to 2^32 - 1"),
    "run.amp": (_one_of("none", "auto", "bf16", "fp16"), "none, auto, bf16 or fp16"),
    "run.threads": (lambda v: isinstance(v, int) and v >= 0, "0 (torch's default) or more"),
    "run.log_every": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    "run.val_every": (lambda v: isinstance(v, int) and v >= 0, "0 (off) or more"),
    "run.ckpt_every": (lambda v: isinstance(v, int) and v >= 0, "0 (off) or more"),
    "recipe.name": (_one_of("plain", "espan-sd"), "plain or espan-sd"),
    "recipe.extra_blocks": (lambda v: isinstance(v, int) and v >= 0, "0 or more"),
    "recipe.shrink_every": (lambda v: isinstance(v, int) and v >= 0, "0 or more"),
    "lora.groups": (
        lambda v: all(
            isinstance(g, dict)
            and set(g) == {"pattern", "rank", "alpha"}
            and isinstance(g["pattern"], str)
            and isinstance(g["rank"], int)
            and g["rank"] >= 1
            and _finite(g["alpha"])
            and g["alpha"] > 0
            for g in v
        ),
        "a list of {pattern, rank >= 1, alpha > 0}",
    ),
    "lora.taps": (lambda v: all(isinstance(t, str) for t in v), "a list of module patterns"),
    "lora.affinity_chunk": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
}
# Settings that take a number or "auto": an integer, or the word, from a file, a flag or --set.
AUTO_OR_INT = ("data.workers",)
NON_NEGATIVE = (
    "loss.l1",
    "loss.l2",
    "loss.charbonnier",
    "loss.gv",
    "loss.gv_x",
    "loss.gv_y",
    "loss.gv_l",
    "loss.freq",
    "loss.freq_alpha",
    "loss.freq_beta",
    "recipe.sd_weight",
    "recipe.sd_margin",
    "lora.teacher_weight",
    "lora.affinity_weight",
    "distill.weight",
)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config", base: TrainConfig | None = None) -> TrainConfig:
        """`raw`'s values over `base` (default: the defaults above)."""
        config = copy.deepcopy(base) if base is not None else cls()
        for section, values in raw.items():
            if section not in SECTIONS:
                raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: [{section}] must be a table of settings, not {values!r}")
            for key, value in values.items():
                config.set(f"{section}.{key}", value, where)
        return config

    @classmethod
    def from_toml(cls, path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
        try:
            return cls.from_dict(tomllib.loads(Path(path).read_text(encoding="utf-8")), str(path), base)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({' '.join(str(exc).split())})") from None

    def set(self, dotted: str, value: Any, where: str = "override") -> None:
        """Set `section.key`, converting strings from the command line to the field's type."""
        section, _, key = dotted.partition(".")
        target = getattr(self, section, None) if section in SECTIONS else None
        names = {f.name: f for f in fields(target)} if target is not None else {}
        if key not in names:
            raise ConfigError(f"{where}: unknown setting '{dotted}'")
        current = getattr(target, key)
        if dotted in AUTO_OR_INT:  # checked by RULES with the rest
            value = _parse(value, dotted, where) if isinstance(value, str) else value
            setattr(target, key, int(value) if isinstance(value, float) and value.is_integer() else value)
            return
        if current is None:  # "from the preset" until set: any TOML value, checked where it is used
            setattr(target, key, _parse(value, dotted, where) if isinstance(value, str) else value)
            return
        if isinstance(value, str) and not isinstance(current, str):
            value = _parse(value, dotted, where)
        kind = {bool: bool, int: (int, float), float: (int, float), str: str, list: list, dict: dict}.get(type(current), object)
        if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, kind):
            expected = {list: "a list", dict: "a table", str: "a string"}.get(type(current), type(current).__name__)
            raise ConfigError(f"{where}: '{dotted}' expects {expected}, got {value!r}")
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}: '{dotted}' expects an integer, got {value}")
            value = int(value)
        setattr(target, key, value)

    def validate(self, where: str = "config") -> TrainConfig:
        """Every setting within its range (RULES), or a ConfigError naming the first that is not."""
        rules = {**RULES, **{key: (_at_least(0), "0 or more") for key in NON_NEGATIVE}}
        for dotted, (ok, expected) in rules.items():
            section, _, key = dotted.partition(".")
            value = getattr(getattr(self, section), key)
            try:
                good = bool(ok(value))
            except (TypeError, KeyError):
                good = False
            if not good:
                raise ConfigError(f"{where}: '{dotted}' must be {expected}, not {value!r}")
        channels = self.model.args.get("channels")
        if channels is not None and not (isinstance(channels, int) and channels >= 1):
            raise ConfigError(f"{where}: 'model.args.channels' must be a positive integer, not {channels!r}")
        if self.degradation.enabled:
            self.degradation.resolved()
        if self.distill.teacher and self.degradation.enabled:
            raise ConfigError(f"{where}: distill.teacher labels the bicubic LR of each image once; it cannot follow random degradations")
        if self.distill.teacher and self.lora.student:
            raise ConfigError(f"{where}: a LoRA run has its own teacher (lora.teacher); leave distill.teacher empty")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {name: asdict(getattr(self, name)) for name in SECTIONS}

    def to_toml(self) -> str:
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None)
            lines.append("")
        return "\n".join(lines)


def _parse(text: str, dotted: str, where: str) -> Any:
    """A command-line value as TOML would read it (numbers, booleans, lists), else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
