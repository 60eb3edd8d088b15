"""The `esr` command line: a thin layer over the library."""

from __future__ import annotations

import click

from ..version import __version__
from .bench import bench
from .common import EsrGroup
from .export import export
from .models import models
from .train import finetune_lora, train
from .upscale import upscale
from .video import video

EPILOG = """\b
Examples:
  esr upscale photo.jpg                   photo_x4.jpg beside it (embedded model, offline)
  esr video in.mp4 out.mp4                every frame, audio and subtitle kept
  esr models list                         the models you can name with -m
  esr models fetch span-tiny              download, verify and fuse once
  esr bench quality -m efdn --data sets/Set5  PSNR/SSIM on a set you downloaded
  esr bench speed -m span-tiny --size 320x180
"""


@click.group(cls=EsrGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="esr")
def main() -> None:
    """esr: efficient super-resolution (SPAN, EFDN, ESPAN, DSCLoRA) on CUDA, MPS or CPU."""


main.add_command(models)
main.add_command(bench)
main.add_command(upscale)
main.add_command(video)
main.add_command(train)
main.add_command(export)
main.add_command(finetune_lora)
