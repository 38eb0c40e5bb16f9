"""The `star` command: a thin layer over the Python API (`star.loop.run`, `star.config`)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .errors import ConfigError, StarError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="STAR: active learning with dynamic uncertainty and constraint LoRA.")
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


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
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the run in this directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table."),
) -> None:
    """Run an active-learning experiment (no arguments: the embedded default). Override any
    option as section.option=value or --section.option value, e.g. al.rounds=3 --lora.r 4."""
    from .config import load_config
    from .loop import run

    overrides = overrides_from_args(list(ctx.args))
    if resume is not None:
        if config is not None or overrides:
            raise ConfigError("--resume takes the run's own config.yaml; drop --config and overrides")
        run(resume=resume, show_progress=not quiet)
        return
    run(load_config(config, overrides), show_progress=not quiet)


@app.command("config", context_settings=_EXTRA)
def config_command(ctx: typer.Context, config: Optional[str] = typer.Option(None, "--config", "-c")) -> None:
    """Print the resolved configuration (defaults, file and overrides) as YAML."""
    from .config import dump_config, load_config

    typer.echo(dump_config(load_config(config, overrides_from_args(list(ctx.args)))), nl=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: StarErrors become one clear message and exit code 2, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except StarError as e:
        typer.secho(f"error: {e.message}", fg="red", err=True)
        if e.hint:
            typer.echo(f"  hint: {e.hint}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted; resume with `star run --resume DIR`", err=True)
        return 130
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.Exit):
            return e.exit_code
        if isinstance(e, click.ClickException):
            e.show()
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
