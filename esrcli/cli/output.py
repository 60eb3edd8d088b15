"""The one sink for what a command prints: human lines, notes, the --json document, progress bars, errors.

Every command says what it has to say through an `Output` made from its --json, --quiet and -v flags,
so which mode prints what is decided here once, instead of in `if as_json:` branches in each command:

    human  lines, notes, details (-v), progress bars, then the human form of the result
    quiet  notes, details (-v) and the human form of the result: no chatter, no bars
    json   one JSON document on stdout, nothing else but errors

Errors go to stderr in every mode. The result's human form goes to stdout, everything else to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, Literal

import click
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

Mode = Literal["human", "json", "quiet"]


def fail(message: str) -> None:
    """One red line on stderr: how esr reports an error, in every mode and from outside any command too."""
    stderr.print(f"[bold red]esr: error:[/] {message}", highlight=False, markup=True)


def print_json(data: Any) -> None:
    """The --json document: plain json (not Rich, which would wrap and colour it), one per run."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class RateColumn(ProgressColumn):
    """Items per second, for tiles and frames (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f}/s" if speed else "", style="progress.data.speed")


def counting_columns(*, rate: bool = True) -> tuple[ProgressColumn, ...]:
    """The bar every command counting files, tiles, frames or images shows: new columns for each bar."""
    rate_column = (RateColumn(),) if rate else ()
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *rate_column, TimeRemainingColumn())


class Output:
    """Where a command's output goes, by mode; see the module's docstring for what each mode prints."""

    def __init__(self, mode: Mode = "human", *, verbose: bool = False) -> None:
        self.mode = mode
        self.verbose = verbose and mode != "json"  # -v's details are shown, even with --quiet

    @classmethod
    def from_flags(cls, *, as_json: bool = False, quiet: bool = False, verbose: bool = False) -> Output:
        """--json wins over --quiet: the document is the whole of stdout either way."""
        return cls("json" if as_json else "quiet" if quiet else "human", verbose=verbose)

    @property
    def show_progress(self) -> bool:
        """Progress bars, spinners and download bars: only for a person watching (never with --json or --quiet)."""
        return self.mode == "human"

    def say(self, message: str, *, markup: bool | None = None) -> None:
        """Chatter on stderr: what is happening and how it went, when nothing went wrong. Human mode only."""
        if self.mode == "human":
            stderr.print(message, highlight=False, markup=markup)

    def note(self, message: str, *, markup: bool | None = None) -> None:
        """A line on stderr worth reading even with --quiet (a failure, a warning); --json has it in its document."""
        if self.mode != "json":
            stderr.print(message, highlight=False, markup=markup)

    def warning(self, message: str) -> None:
        """A plain `warning:` note (a file name is not Rich markup)."""
        self.note(f"warning: {message}", markup=False)

    def detail(self, message: str, *, markup: bool | None = None) -> None:
        """A -v line on stderr: the plan, the model, each file's --denoise. Never with --json."""
        if self.verbose:
            stderr.print(message, highlight=False, markup=markup)

    def show(self, renderable: RenderableType, *, markup: bool | None = None, highlight: bool | None = False) -> None:
        """The human form of the result, on stdout: with --quiet too (it is the answer), never with --json."""
        if self.mode != "json":
            stdout.print(renderable, highlight=highlight, markup=markup)

    def error(self, message: str, *, in_json: bool = True) -> None:
        """An error line on stderr, in every mode; in_json=False: one the --json document reports instead."""
        if in_json or self.mode != "json":
            fail(message)

    def result(self, data: Any, human: Callable[[], object] | None = None) -> None:
        """The command's answer: with --json, `data` (or what calling it returns) as the one JSON document on
        stdout; otherwise `human` prints it (a command whose lines came along the way passes none)."""
        if self.mode == "json":
            print_json(data() if callable(data) else data)
        elif human is not None:
            human()

    def progress(self, *columns: ProgressColumn | str, transient: bool = True) -> Progress:
        """A progress display on stderr, hidden unless show_progress; lines printed meanwhile appear above it."""
        return Progress(*columns, console=stderr, disable=not self.show_progress, transient=transient)

    @contextmanager
    def status(self, message: str) -> Iterator[Callable[[str], object] | None]:
        """A spinner on stderr while a slow step runs, yielding its update function (None when hidden)."""
        if not self.show_progress:
            yield None
            return
        with stderr.status(message, spinner="dots") as spinner:
            yield spinner.update


def output_options(
    *, json_help: str | None = None, quiet_help: str | None = None, verbose_help: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--json, --quiet and -v (those given a help text), in that order in --help, handed to the command as one
    `ui: Output` instead of three flags to test. Put it last, right above the function."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(command)
        def with_output(*args: Any, as_json: bool = False, quiet: bool = False, verbose: bool = False, **kwargs: Any) -> Any:
            return command(*args, ui=Output.from_flags(as_json=as_json, quiet=quiet, verbose=verbose), **kwargs)

        flags = ((("--json", "as_json"), json_help), (("--quiet",), quiet_help), (("-v", "--verbose"), verbose_help))
        for names, help_text in flags:
            if help_text is not None:
                with_output = click.option(*names, is_flag=True, help=help_text)(with_output)
        return with_output

    return decorate
