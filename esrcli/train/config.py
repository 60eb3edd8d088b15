"""Training configuration: dataclasses read from TOML (stdlib tomllib), with dotted overrides.

One config describes a run completely and is written to RUN_DIR/config.toml, so a run can be
resumed, exported and reproduced from its folder alone.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import EsrError


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
    batch: int = 16  # per process
    workers: int = 2


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
    amp: str = "none"  # none | bf16 | fp16 (fp16 only on CUDA)
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
    groups: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"pattern": "block_*.c?_r.eval_conv", "rank": 2, "alpha": 4.0},
            {"pattern": "conv_2.eval_conv", "rank": 8, "alpha": 16.0},
            {"pattern": "upsampler.0", "rank": 8, "alpha": 16.0},
        ]
    )
    taps: list[str] = field(default_factory=lambda: ["block_1.c?_r", "block_2.c?_r", "block_3.c?_r"])
    teacher_weight: float = 1.0  # L1(SR_student, SR_teacher); loss.l1 weighs L1(SR_student, HR)
    # Spatial affinity. FAKD's 0.5 / 0.5 / 10 on 0..255 images would be 1 / 1 / 0.08 on 0..1 images, but
    # between two different networks the nine affinity distances sum to ~1 (vs L1 ~0.006), and 0.08 cost
    # SPAN-tiny 0.4 dB (measured); 0.002 keeps the term beside the L1 terms.
    affinity_weight: float = 0.002
    affinity_chunk: int = 1024  # rows of the N x N affinity built at once


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "recipe": RecipeConfig,
    "lora": LoraConfig,
}


class ConfigError(EsrError, ValueError):
    pass


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config", base: TrainConfig | None = None) -> TrainConfig:
        """`raw`'s values over `base` (default: the defaults above)."""
        config = copy.deepcopy(base) if base is not None else cls()
        for section, values in raw.items():
            if section not in SECTIONS or not isinstance(values, dict):
                raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            for key, value in values.items():
                config.set(f"{section}.{key}", value, where)
        return config

    @classmethod
    def from_toml(cls, path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
        try:
            return cls.from_dict(tomllib.loads(Path(path).read_text(encoding="utf-8")), str(path), base)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc})") from None

    def set(self, dotted: str, value: Any, where: str = "override") -> None:
        """Set `section.key`, converting strings from the command line to the field's type."""
        section, _, key = dotted.partition(".")
        target = getattr(self, section, None) if section in SECTIONS else None
        names = {f.name: f for f in fields(target)} if target is not None else {}
        if key not in names:
            raise ConfigError(f"{where}: unknown setting '{dotted}'")
        current = getattr(target, key)
        if isinstance(value, str) and not isinstance(current, str):
            value = _parse(value, dotted, where)
        if isinstance(current, bool) != isinstance(value, bool) or (
            isinstance(current, (int, float)) and not isinstance(value, (int, float))
        ):
            raise ConfigError(f"{where}: '{dotted}' expects {type(current).__name__}, got {value!r}")
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}: '{dotted}' expects an integer, got {value}")
            value = int(value)
        setattr(target, key, value)

    def to_dict(self) -> dict[str, Any]:
        return {name: asdict(getattr(self, name)) for name in SECTIONS}

    def to_toml(self) -> str:
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
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
