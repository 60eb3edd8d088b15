"""`esr train` and `esr finetune-lora`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from ..archs import names as arch_names
from ..runconfig import CONFIG, PRESETS, ConfigError, TrainConfig
from .common import FiniteFloat, interrupt_code
from .output import Output, RateColumn, output_options

if TYPE_CHECKING:
    from ..train.trainer import Trainer

EXAMPLES = """\b
Examples:
  esr train --arch span --channels 26 --scale 4 --data photos/ --val val/ --out runs/span26
  esr train --config run.toml --out runs/a --set optim.lr=5e-4 --set run.steps=200000
  esr train --resume runs/span26                        continue after Ctrl-C or a crash
  esr train --config x2.toml --out runs/x2 --init runs/span26   an x2 model from the x4 run's weights
  torchrun --nproc-per-node 2 -m esrcli train --config run.toml --out runs/ddp
  esr export runs/span26 --out span26_x4.safetensors    plain fused weights for -m
"""


# click parameter -> config key: flags override the config file (or a resumed run's), --set overrides both.
FLAG_KEYS = {
    "arch": "model.arch",
    "scale": "model.scale",
    "form": "model.form",
    "init": "model.init",
    "val": "data.val",
    "steps": "run.steps",
    "batch": "data.batch",
    "lr_patch": "data.lr_patch",
    "lr": "optim.lr",
    "device": "run.device",
    "amp": "run.amp",
    "seed": "run.seed",
    "workers": "data.workers",
    "teacher": "lora.teacher",
    "degradation": "degradation.preset",
    "student": "lora.student",
}


class Workers(click.ParamType):
    """--workers: a count, or auto (what data.workers = "auto" means: the cores the training process leaves free)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor auto", param, ctx)


def resolve_config(options: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Defaults, then a file (or the run's own config when resuming), then flags, then --set: later wins."""
    config, resume = options.get("config"), options.get("resume")
    if resume is not None:
        cfg = TrainConfig.from_toml(resume / CONFIG)
    elif config is not None:
        cfg = TrainConfig.from_toml(config, base=base)
    else:
        cfg = base or TrainConfig()
    for name, key in FLAG_KEYS.items():
        if options.get(name) is not None:
            cfg.set(key, options[name], "command line")
    if options.get("data"):
        cfg.data.train = [str(d) for d in options["data"]]
    if options.get("channels") is not None:
        cfg.model.args["channels"] = options["channels"]
    for item in options.get("settings", ()):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        cfg.set(key.strip(), value.strip(), "--set")
    return cfg


def configure_and_run(options: dict[str, Any], base: TrainConfig | None = None, *, lora: bool = False) -> None:
    """The body shared by `esr train` and `esr finetune-lora`: resolve, maybe print, then train."""
    try:
        cfg = resolve_config(options, base)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if options["print_config"]:
        options["ui"].show(cfg.to_toml(), markup=False)
        return
    if lora and not (cfg.lora.teacher and cfg.lora.student):
        raise click.UsageError("pass --teacher and --student")
    _run(cfg, options["out"], options["resume"], options["ui"])


def run_training(trainer: Trainer, ui: Output) -> None:
    """The live view: step, loss, lr, it/s, ETA and the last validation PSNR."""
    columns = (
        TextColumn("step"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  val {task.fields[psnr]}"),
    )
    with ui.progress(*columns, transient=False) as progress:
        task = progress.add_task("train", total=trainer.cfg.run.steps, completed=trainer.step, loss="-", lr="-", psnr="-")

        def on_event(event: dict) -> None:
            kind = event["kind"]
            if kind == "step":
                progress.update(task, completed=event["step"], loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
            elif kind == "val":
                progress.update(task, psnr=f"{event['psnr']:.2f} dB")
                ui.note(f"step {event['step']}: validation PSNR {event['psnr']:.3f} dB, SSIM {event['ssim']:.4f}")
            elif kind == "start":
                _say_start(ui, trainer, event)
            elif kind == "labelling":
                ui.say(f"labelling {event['images']} images with the teacher {event['teacher']} (once per run)")
            elif kind == "interrupted":
                ui.note(f"interrupted: checkpoint saved at step {event['step']}; continue with esr train --resume {trainer.run_dir}")

        trainer.fit(on_event)


def _say_start(ui: Output, trainer: Trainer, event: dict) -> None:
    """What the run trains on, where and from what; images left out are said even with --quiet (it changes what
    the run learns from)."""
    workers = f"{event['workers']} data worker(s){' (auto)' if trainer.cfg.data.workers == 'auto' else ''}"
    ui.say(
        f"training on {event['images']} images, {event['world']} process(es) on {event['device']} in {event['precision']}, "
        f"{workers}, from step {event['step']}"
    )
    if event["left_out"]:
        ui.note(
            f"left out {event['left_out']} of {event['images'] + event['left_out']} images smaller than an HR patch "
            f"of {event['patch']} px (a smaller --lr-patch keeps them)"
        )
    if trainer.cfg.model.init and event["step"] == 0:
        fresh = ", ".join(event["left_at_init"]) or "nothing"
        narrowed = f" ({event['narrowed_init']})" if event["narrowed_init"] else ""
        ui.say(f"started from {trainer.cfg.model.init}{narrowed}; left at initial values: {fresh}")


def run_options(f):
    """Options shared by `esr train` and `esr finetune-lora`: config, run folder, data, optimisation, device."""
    for option in reversed(
        [
            click.option(
                "--config",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A TOML run config (sections model, data, loss, optim, run, recipe).",
            ),
            click.option(
                "--out", type=click.Path(file_okay=False, path_type=Path), help="The run folder (checkpoints, metrics.jsonl, config.toml)."
            ),
            click.option(
                "--resume",
                type=click.Path(exists=True, file_okay=False, path_type=Path),
                help="Continue the run in this folder from its last checkpoint.",
            ),
            click.option(
                "--data",
                multiple=True,
                type=click.Path(exists=True, file_okay=False),
                help="Training images (repeatable); a folder with HR/ and LR_bicubic/X{s}/ is used as pairs.",
            ),
            click.option("--val", type=click.Path(exists=True, file_okay=False), help="Validation images or set folder."),
            click.option("--steps", type=int, help="Total optimisation steps."),
            click.option("--batch", type=int, help="Batch size per process."),
            click.option("--lr-patch", type=int, help="LR crop size."),
            click.option("--lr", type=FiniteFloat(min=0, min_open=True), help="Learning rate."),
            click.option(
                "--workers",
                type=Workers(),
                help="DataLoader worker processes making the batches (default auto: the cores the training leaves free; "
                "0 on a CPU that training already fills).",
            ),
            click.option("--device", help="auto, cpu, cuda, cuda:N or mps."),
            click.option(
                "--amp",
                type=click.Choice(["none", "auto", "bf16", "fp16"]),
                help="Mixed precision; auto: bf16 where the device computes it natively (CUDA, CPUs with AVX-512 BF16 or AMX), else none.",
            ),
            click.option(
                "--degradation",
                type=click.Choice(list(PRESETS)),
                help="Make LR with random real-world degradations (blur, noise, JPEG...) instead of plain bicubic; "
                "tune them in the [degradation] section.",
            ),
            click.option("--seed", type=int, help="Seed of the weights' initialisation and of every training sample."),
            click.option(
                "--set",
                "settings",
                multiple=True,
                metavar="KEY=VALUE",
                help="Any config value, e.g. --set loss.gv=1 --set optim.schedule=multistep.",
            ),
            click.option("--print-config", is_flag=True, help="Print the resolved config as TOML and exit."),
            output_options(quiet_help="No live view."),
        ]
    ):
        f = option(f)
    return f


@click.command(epilog=EXAMPLES)
@click.option("--arch", help=f"Architecture: {', '.join(arch_names())} (or one added with esrcli.archs.register).")
@click.option("--channels", type=int, help="Feature channels.")
@click.option("--scale", type=int, help="Upscaling factor.")
@click.option(
    "--form", type=click.Choice(["train", "fused"]), help="train: re-parameterisable branches (fused at export); fused: plain convs."
)
@click.option("--init", "init", metavar="MODEL", help="Start from these weights where names and shapes fit (e.g. x2 from an x4 model).")
@run_options
def train(**options: Any) -> None:
    """Train SPAN, EFDN, ESPAN or SPAN-F from images; export plain fused weights with esr export."""
    configure_and_run(options)


def finetune_defaults() -> TrainConfig:
    """DSCLoRA-style finetuning of an already good model: the settings of the measured runs (README).

    Adam moves every LoRA factor by about lr per step whatever its gradient, so a finished model is
    easily pushed off its optimum: lr 5e-5 for 150 steps cost SPAN-tiny 0.05 dB on Set5, 1e-5 did not.
    The losses skip 8 LR pixels at each patch edge, past which SPAN-tiny's output no longer depends
    on where the patch was cut (1e-5 of the patch-edge difference at 10 px); without that border the
    finetune learned the patch edges and lost on whole images.
    """
    cfg = TrainConfig()
    settings = {"optim.lr": 1e-5, "optim.warmup": 20, "run.steps": 300, "data.lr_patch": 48, "loss.border": 8, "data.batch": 8}
    for key, value in settings.items():
        cfg.set(key, value)
    return cfg


FINETUNE_EXAMPLES = """\b
Examples:
  esr finetune-lora --teacher span-ntire24 --student span-tiny --data photos/ --val val/ --out runs/lora
  esr finetune-lora --resume runs/lora
  esr export runs/lora --out span-tiny-lora.safetensors     the student's own keys, LoRA merged
"""


@click.command("finetune-lora", epilog=FINETUNE_EXAMPLES)
@click.option("--teacher", help="The frozen teacher: registry name, weight file or run folder.")
@click.option("--student", help="The student to improve: registry name, weight file or run folder.")
@run_options
def finetune_lora(**options: Any) -> None:
    """Finetune a student with ConvLoRA under a teacher's supervision (DSCLoRA), then merge."""
    configure_and_run(options, base=finetune_defaults(), lora=True)


def _run(cfg: TrainConfig, out: Path | None, resume: Path | None, ui: Output) -> None:
    run_dir = resume or out
    if run_dir is None:
        raise click.UsageError("pass --out RUN_DIR (or --resume RUN_DIR)")
    if resume is None and (run_dir / "checkpoint.pt").exists():
        raise click.UsageError(f"{run_dir} already holds a run: use --resume {run_dir} or another --out")
    if not cfg.data.train:
        raise click.UsageError("no training data: pass --data DIR or set data.train in the config")
    from ..train.trainer import Trainer

    trainer = Trainer(cfg, run_dir, resume=resume is not None)
    try:
        run_training(trainer, ui)
    except KeyboardInterrupt as exc:  # the trainer saved a checkpoint and said so
        sys.exit(interrupt_code(exc))
    finally:
        trainer.close()


__all__ = ["train", "finetune_lora"]
