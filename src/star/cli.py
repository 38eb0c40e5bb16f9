"""The `star` command: a thin layer over the Python API (`star.loop.run`, `star.config`, `star.experiments`)."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from star.cli_labelstudio import labelstudio_app
from star.errors import ConfigError, RunInterrupted, StarError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="STAR: active learning with dynamic uncertainty and constraint LoRA.")
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
app.add_typer(labelstudio_app, name="labelstudio")  # star labelstudio export|import|push|pull


def overrides_from_args(args: list[str]) -> list[str]:
    """['--al.rounds', '3', 'lora.r=4', '--seed=1'] -> ['al.rounds=3', 'lora.r=4', 'seed=1']."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" not in arg:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"option {arg} has no value", hint=f"write {arg} VALUE or {arg[2:]}=VALUE")
            out.append(f"{arg[2:]}={args[i + 1]}")
            i += 2
            continue
        if "=" not in arg:
            raise ConfigError(f"unexpected argument {arg!r}", hint="overrides look like al.rounds=3 or --al.rounds 3")
        out.append(arg.removeprefix("--"))
        i += 1
    return out


@app.command("run", context_settings=_EXTRA)
def run_command(
    ctx: typer.Context,
    config: str | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    resume: str | None = typer.Option(None, "--resume", help="Continue the run in this directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table."),
    num_processes: int = typer.Option(1, "--num-processes", "-n", min=1,
                                      help="Processes on this machine, started through `accelerate launch` (DDP)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="With --num-processes: shard the model's parameters (FSDP) instead of DDP."),
) -> None:
    """Run an active-learning experiment (no arguments: the embedded default). Override any
    option as section.option=value or --section.option value, e.g. al.rounds=3 --lora.r 4."""
    from star.config import load_config
    from star.loop import run
    from star.parallel import distributed

    overrides = overrides_from_args(list(ctx.args))
    if resume is not None and (config is not None or overrides):
        raise ConfigError("--resume takes the run's own config.yaml; drop --config and overrides")
    resolved = None if resume is not None else load_config(config, overrides)  # errors before any launch
    if fsdp and num_processes == 1:
        raise ConfigError("--fsdp shards the model across processes and needs --num-processes 2 or more",
                          hint="add --num-processes N, or launch with examples/accelerate/fsdp.yaml")
    if num_processes > 1 and distributed.launched_world_size() == 1:
        args = (["--resume", resume] if resume is not None else ([] if config is None else ["--config", config]))
        args = ["run", *args, *(["--quiet"] if quiet else []), *list(ctx.args)]
        code = distributed.relaunch(num_processes, args, fsdp=fsdp)
        if code:
            raise typer.Exit(code)
        return
    try:
        run(resolved, resume=resume, show_progress=not quiet)
    except RunInterrupted as e:  # also when the signal came before the run directory was known to the loop
        e.hint = f"continue with `star run --resume {resume if resume is not None else resolved.output_dir}`"
        raise


@app.command("config", context_settings=_EXTRA)
def config_command(ctx: typer.Context, config: str | None = typer.Option(None, "--config", "-c")) -> None:
    """Print the resolved configuration (defaults, file and overrides) as YAML."""
    from star.config import dump_config, load_config

    typer.echo(dump_config(load_config(config, overrides_from_args(list(ctx.args)))), nl=False)


@app.command("compare", context_settings=_EXTRA)
def compare_command(
    ctx: typer.Context,
    config: str | None = typer.Option(None, "--config", "-c", help="Base YAML config of every cell."),
    strategies: str | None = typer.Option(None, "--strategies", help="Comma-separated strategies, one arm each."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds: one run per arm and seed."),
    arm: list[str] | None = typer.Option(None, "--arm", help="Extra arm NAME:key=val,key=val (repeatable)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Grid folder (cells, grid.yaml, report/)."),
    resume: str | None = typer.Option(None, "--resume", help="Continue the grid in this folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1,
                             help="Cells run at once, each in its own process: one GPU each where there are"
                                  " GPUs, else cores / jobs threads each. Output: OUT/logs/."),
) -> None:
    """Run a grid of strategies (and --arm ablations) x seeds on one task, then write a report to
    OUT/report/. Re-running the same command, or --resume OUT, continues an interrupted grid."""
    from star.config import load_config
    from star.experiments.compare import (
        Arm,
        compare,
        parse_seeds,
        parse_strategies,
        resume_compare,
    )

    overrides = overrides_from_args(list(ctx.args))
    if resume is not None:
        if config is not None or overrides or strategies or arm or out:
            raise ConfigError("--resume takes the grid recorded in OUT/grid.yaml",
                              hint="drop --config, --strategies, --arm, --out and overrides")
        resume_compare(resume, show_progress=not quiet, jobs=jobs)
        return
    if out is None:
        raise ConfigError("star compare needs --out DIR",
                          hint="e.g. star compare --strategies random,pe-dynamic --seeds 0,1 --out runs/cmp")
    arms = (parse_strategies(strategies) if strategies else []) + [Arm.parse(a) for a in arm or []]
    compare(load_config(config, overrides), arms, parse_seeds(seeds), out, show_progress=not quiet, jobs=jobs)


@app.command("report")
def report_command(
    dirs: list[str] = typer.Argument(..., help="Run directories and/or `star compare` folders (searched beneath)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Report folder (default: DIR/report for one DIR)."),
    paired_with: str | None = typer.Option(None, "--paired-with", metavar="ARM",
                                              help="Arm also compared with every other, seed by seed, with bootstrap intervals (random always is)."),
) -> None:
    """Rebuild a comparison report (Markdown, HTML, JSON, PNG figures) from finished runs."""
    from pathlib import Path

    from star.experiments.report import write_report

    if out is None and len(dirs) > 1:
        raise ConfigError("several DIRs need --out OUTDIR for the report",
                          hint="e.g. star report runs/a runs/b --out runs/report")
    folder = write_report(dirs, out if out is not None else Path(dirs[0]) / "report", paired_with)
    typer.echo(f"report written to {folder / 'report.md'} (also report.html, report.json and PNG figures)")


@app.command("probe", context_settings=_EXTRA)
def probe_command(
    ctx: typer.Context,
    config: str | None = typer.Option(None, "--config", "-c", help="YAML config: task, model, seed, training."),
    sizes: str = typer.Option("0,16,32,64,128", "--sizes",
                              help="Comma-separated labelled-set sizes (0 = the base model)."),
    probe_size: int = typer.Option(64, "--probe-size", help="Pool examples in the probe set (in no labelled set)."),
    strength: list[str] | None = typer.Option(
        None, "--strength", help="Constraint-term sweep KEY=V1,V2 (repeatable): train.weight_decay_b,"
                                 " train.b_penalty or al.mc_dropout_p."),
    out: str | None = typer.Option(None, "--out", "-o", help="Output folder (probe.json, probe.md, figures)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """The paper's two probes: AUROC of u_base and u_full at finding wrong answers, and ECE with and without
    each constraint term, at each labelled-set size. Re-running the same command skips sizes already done."""
    from star.config import load_config
    from star.experiments.probe import ProbeSettings, probe

    if out is None:
        raise ConfigError("star probe needs --out DIR", hint="e.g. star probe --sizes 0,16,64 --out runs/probe")
    settings = ProbeSettings.parse(sizes, probe_size, strength or [])
    folder = probe(load_config(config, overrides_from_args(list(ctx.args))), settings, out, show_progress=not quiet)
    typer.echo(f"probe written to {folder / 'probe.md'} (also probe.json and PNG figures)")


@app.command("query")
def query_command(run_dir: str = typer.Argument(..., metavar="RUN", help="The run directory.")) -> None:
    """Show the open round's query and write the items still to answer to round-<t>/todo.{jsonl,csv}.

    The query itself (with the model's suggestions) is written by `star run` when it stops for
    labels (al.annotator=human); this command needs no model."""
    from star.annotation.queries import open_round, write_todo

    open_ = open_round(run_dir)
    jsonl, csv_path, left = write_todo(open_)
    total = len(open_.items)
    typer.echo(f"round {open_.index} of {open_.run.path}: {left} of {total} item(s) still need an answer")
    typer.echo(f"  whole batch : {open_.query_path} (and .csv)")
    if left == 0:
        typer.echo(f"all labelled; train on them with: star run --resume {open_.run.path}")
        return
    typer.echo(f"  to answer   : {jsonl}\n                {csv_path}")
    typer.echo(f"fill in the answer column, then: star label {open_.run.path} FILE   (or answer in the page: "
               f"star annotate {open_.run.path})")


@app.command("label")
def label_command(
    run_dir: str = typer.Argument(..., metavar="RUN", help="The run directory."),
    file: str = typer.Argument(..., metavar="FILE", help="Answers: JSON lines or .csv with id and answer."),
    annotator: str = typer.Option("human", "--annotator", help="Who answered (unless the file names it)."),
    correct: bool = typer.Option(False, "--correct", help="Replace answers already given (the old ones are kept as history)."),
) -> None:
    """Import answers into the open round: every line is checked first, then all are committed at once.
    With --correct, replace committed answers instead (any round, also of a finished run)."""
    from star.annotation.commit import correct_labels, import_labels
    from star.annotation.queries import open_round

    if correct:
        pairs = correct_labels(run_dir, file, annotator)
        first = min(old.round for old, _ in pairs)
        typer.echo(f"corrected {len(pairs)} label(s) in {run_dir} (the earliest from round {first}); the old answers "
                   "are kept in the store's history. Models already trained keep their adapters: the corrections "
                   "count from the next model trained.")
        return
    count = import_labels(run_dir, file, annotator)
    open_ = open_round(run_dir)
    left = len(open_.remaining())
    typer.echo(f"imported {count} label(s) into round {open_.index} of {open_.run.path}; {left} still to answer")
    if left == 0:
        typer.echo(f"next: star run --resume {open_.run.path}")


@app.command("annotate")
def annotate_command(
    run_dir: str = typer.Argument(..., metavar="RUN", help="The run directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: loopback only)."),
    port: int = typer.Option(0, "--port", help="Port (0: any free port).", min=0, max=65535),
    annotator: str = typer.Option("web", "--annotator", help="Name recorded as human:NAME with each label."),
    token: str | None = typer.Option(None, "--token", help="Access token (off loopback; default: a random one)."),
) -> None:
    """Serve a local page to answer the open round's query; each answer is committed as it is given."""
    from star.annotation.queries import open_round
    from star.annotation.server import is_loopback, make_server

    server = make_server(run_dir, host, port, f"human:{annotator}", token)
    if not is_loopback(host):
        typer.secho(f"warning: serving on {host}: whoever has the URL below, token included, can write labels",
                    fg="yellow", err=True)
    typer.echo(f"annotate round {open_round(run_dir).index} of {run_dir} at {server.url}  (Ctrl+C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped; every answer given is in the label store")
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: StarErrors become one clear message and exit code 2, never a traceback."""
    try:
        result = app(args=argv, standalone_mode=False)  # an Exit's code is returned, not raised
    except RunInterrupted as e:  # SIGTERM / SIGINT during `star run`: where it stopped, and 128 + the signal
        typer.secho(f"stopped: {e.message}", fg="yellow", err=True)
        if e.hint:
            typer.echo(f"  hint: {e.hint}", err=True)
        return e.exit_code
    except StarError as e:
        typer.secho(f"error: {e.message}", fg="red", err=True)
        if e.hint:
            typer.echo(f"  hint: {e.hint}", err=True)
        return 2
    except KeyboardInterrupt:
        args = sys.argv[1:] if argv is None else argv
        resumable = bool(args) and args[0] in ("run", "compare")
        typer.echo("interrupted" + ("; every committed label is kept: continue with --resume DIR" if resumable else ""), err=True)
        return 130
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.Exit):
            return e.exit_code
        if isinstance(e, click.ClickException):
            e.show()
            return 2
        raise
    return result if isinstance(result, int) else 0


def entry() -> NoReturn:
    """The `star` command and `python -m star`: `main`, then the exit (a launched worker skips teardown).

    An unexpected exception is printed with its traceback and exits 1 the same way, so a
    worker of a multi-process run never reaches interpreter teardown (parallel/distributed.py).
    """
    import traceback

    from star.parallel.distributed import exit_process

    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - a bug: shown in full, then the same exit
        traceback.print_exc()
        code = 1
    exit_process(code)


if __name__ == "__main__":
    entry()
