"""`esr upscale --watch`: its options, and the watch under one progress display, a line per file.

The work is `esrcli.watch`'s; this module maps options and prints through `Output`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from .common import FiniteFloat, interrupt_code
from .output import Output, counting_columns

if TYPE_CHECKING:
    from ..api import Model
    from ..batch import Outcome, Settings, Task
    from ..scaling import Pipeline
    from ..watch import WatchRun

POSITIVE_SECONDS = FiniteFloat(min=0.05)


def watch_options(f: Callable) -> Callable:
    """--watch, --poll and --settle."""
    f = click.option(
        "--settle",
        type=FiniteFloat(min=0),
        metavar="SECONDS",
        help="With --watch: how long a new file's size and time must stay the same before it is read.  [default: 1]",
    )(f)
    f = click.option(
        "--poll",
        type=POSITIVE_SECONDS,
        metavar="SECONDS",
        help="With --watch: list the folders every SECONDS instead of waiting for file events (for network mounts, "
        'where events do not arrive). Without watchdog (pip install "esrcli[watch]") esr polls every second.',
    )(f)
    f = click.option(
        "--watch",
        is_flag=True,
        help="Keep running: upscale images as they arrive in the input folders (existing ones first), each once, until "
        "Ctrl-C or SIGTERM. Needs -o FOLDER outside them.",
    )(f)
    return f


def check_watch_options(*, watch: bool, poll: float | None, settle: float | None, ray: bool) -> None:
    """Refuse the combinations --watch does not take, before the model is opened."""
    if not watch:
        for name, value in (("--poll", poll), ("--settle", settle)):
            if value is not None:
                raise click.UsageError(f"{name} only applies with --watch")
    elif ray:
        raise click.UsageError("--watch runs here: it does not take --ray")


def run_watch(
    ui: Output,
    folders: list[Path],
    *,
    out: Path,
    model: Model,
    pipeline: Pipeline,
    settings: Settings,
    recursive: bool,
    suffix: str,
    fmt: str,
    settle: float | None,
    poll: float | None,
    say_outcome: Callable[[Output, Outcome], None],
) -> NoReturn:
    """Watch until interrupted; then the summary (the --json document) and the exit code: 130 for Ctrl-C, 143 for
    SIGTERM, as any interrupted command; 1 if the watch itself failed (a watched folder removed)."""
    from rich.markup import escape

    from ..atomic import remove_stale_partials
    from ..watch import SETTLE, Watcher, upscale_watched

    cleaned: set[Path] = set()
    with Watcher(folders, recursive=recursive, settle=SETTLE if settle is None else settle, poll=poll) as watcher:
        names = ", ".join(str(f) for f in folders)
        ui.say(f"watching {escape(names)} with {escape(watcher.description)}; outputs go to {escape(str(out))}; Ctrl-C stops")
        with ui.progress(*counting_columns(rate=False)) as progress:
            files = progress.add_task(f"watching {names}", total=None)
            tiles = progress.add_task("tiles", total=None, visible=False)
            counts = {"done": 0, "skipped": 0, "failed": 0}

            def start(task: Task, total: int) -> None:
                if task.output.parent not in cleaned and task.output.parent.is_dir():
                    cleaned.add(task.output.parent)
                    remove_stale_partials(task.output.parent)  # left by an esr that was killed outright
                progress.update(files, description=task.source.name)
                progress.reset(tiles, total=total, visible=total > 1, description="  tiles")

            def finished(outcome: Outcome) -> None:  # called from the writer thread, in order
                counts[outcome.status] += 1
                if outcome.status == "done":
                    ui.say(
                        f"upscaled {outcome.source} -> {outcome.output} in {outcome.seconds:.1f} s "
                        f"({counts['done']} upscaled, {counts['skipped']} skipped, {counts['failed']} failed so far)",
                        markup=False,
                    )
                say_outcome(ui, outcome)
                progress.advance(files)
                progress.update(files, description=f"watching {names}")
                progress.update(tiles, visible=False)

            def on_tile(count: int) -> None:
                progress.advance(tiles, count)

            run = upscale_watched(
                watcher,
                pipeline,
                settings,
                out=out,
                recursive=recursive,
                suffix=suffix,
                fmt=fmt,
                on_start=start,
                on_tile=on_tile,
                on_outcome=finished,
            )
    ui.result(lambda: run.summary(model=model.name, pipeline=pipeline), human=lambda: _summarise(ui, run))
    if run.error is not None:
        ui.error(escape(run.error), in_json=False)
    if run.interrupted is not None:
        raise SystemExit(interrupt_code(run.interrupted))
    raise SystemExit(1)


def _summarise(ui: Output, run: WatchRun) -> None:
    """The closing lines on stderr; with --quiet only when a file failed (stopping is how a watch ends)."""
    from rich.markup import escape

    done, skipped, failed = run.of("done"), run.of("skipped"), run.of("failed")
    summary = f"stopped watching after {run.seconds:.1f} s: {len(done)} upscaled, {len(skipped)} skipped, {len(failed)} failed"
    if run.unfinished:
        summary += f"; {run.unfinished} not finished (the next run does them)"
    if failed or run.error:
        ui.note(f"[bold red]{escape(summary)}[/]")
    else:
        ui.say(summary, markup=False)
    if len(failed) > 1:
        for o in failed:
            ui.note(f"  {o.error}", markup=False)
