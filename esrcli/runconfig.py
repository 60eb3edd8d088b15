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

from .archs import names as arch_names
from .degrade_config import PRESETS as PRESETS
from .degrade_config import DegradationConfig
from .errors import ConfigError as ConfigError
from .errors import TrainingError as TrainingError

# The files of a run folder.
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.toml"
METRICS = "metrics.jsonl"


@dataclass
class ModelConfig:
    arch: str = "span"  # an architecture id: esrcli.archs.names()
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


@dataclass
class LoraConfig:
    """esr finetune-lora: a frozen student with ConvLoRA adapters, supervised by a frozen teacher."""

    student: str = ""  # registry name, weight file or run folder; empty = not a LoRA run
    teacher: str = ""
    # Adapters ({pattern, rank, alpha}, first match wins) and affinity taps; empty: the student
    # architecture's own placement (SPAN declares DSCLoRA's, see esrcli.archs.span).
    groups: list[dict[str, Any]] = field(default_factory=list)
    taps: list[str] = field(default_factory=list)
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
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
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
        known = arch_names()  # the registered architectures (no torch)
        arch_rule = (_one_of(*known), ", ".join(known[:-1]) + f" or {known[-1]}")
        rules = {"model.arch": arch_rule, **RULES, **{key: (_at_least(0), "0 or more") for key in NON_NEGATIVE}}
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
