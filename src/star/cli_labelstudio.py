"""`star labelstudio export|import|push|pull`: a round's query through Label Studio (a typer sub-app of star.cli)."""

from __future__ import annotations

import typer

labelstudio_app = typer.Typer(no_args_is_help=True, help="Label a round in Label Studio: export or push its tasks, "
                                                         "import or pull the annotations (all or nothing).")
_RUN = typer.Argument(..., metavar="RUN", help="The run directory (waiting for human labels).")
_URL = typer.Option(None, "--url", help="Label Studio's address, e.g. http://127.0.0.1:8080 (default: the one "
                                        "recorded by the last push).")
_KEY = typer.Option("LABEL_STUDIO_API_KEY", "--api-key-env", help="Environment variable holding the API token.")
_PROJECT = typer.Option(None, "--project", help="Project id (default: the one recorded by the last push).")
_ANNOTATOR = typer.Option("label-studio", "--annotator", help="Name recorded with each imported label.")


def _say_imported(report, run_dir: str) -> None:
    """What an import did, and what comes next."""
    from star.annotation.queries import open_round

    open_ = open_round(run_dir)
    left = len(open_.remaining())
    notes = [f"{report.already} imported before"] if report.already else []
    notes += [f"{len(report.skipped)} skipped in Label Studio"] if report.skipped else []
    notes += [f"{len(report.unanswered)} not annotated yet"] if report.unanswered else []
    notes += [f"{report.earlier} of earlier rounds ignored"] if report.earlier else []
    typer.echo(f"imported {report.committed} label(s) into round {report.round_index} of {open_.run.path}"
               f"{' (' + ', '.join(notes) + ')' if notes else ''}; {left} still to answer")
    if left == 0:
        typer.echo(f"next: star run --resume {open_.run.path}")


@labelstudio_app.command("export")
def export_command(run_dir: str = _RUN,
                   out: str | None = typer.Option(None, "--out", "-o", help="Folder (default: round-<t>/labelstudio/).")
                   ) -> None:
    """Write the open round's labeling config (XML) and its unlabelled items as Label Studio tasks (JSON)."""
    from star.annotation.labelstudio import export_labelstudio

    done = export_labelstudio(run_dir, out)
    typer.echo(f"round {done.round_index}: {done.count} task(s) in {done.tasks_path}, labeling config in "
               f"{done.config_path}")
    typer.echo("create a project with that config, import the tasks, annotate, export as JSON, then: "
               f"star labelstudio import {run_dir} EXPORT.json")


@labelstudio_app.command("import")
def import_command(run_dir: str = _RUN,
                   file: str = typer.Argument(..., metavar="FILE", help="Label Studio's JSON export."),
                   annotator: str = _ANNOTATOR) -> None:
    """Import a Label Studio JSON export into the open round: every task is checked first, then all are committed."""
    from star.annotation.labelstudio_import import import_labelstudio

    _say_imported(import_labelstudio(run_dir, file, annotator), run_dir)


@labelstudio_app.command("push")
def push_command(run_dir: str = _RUN, url: str | None = _URL, api_key_env: str = _KEY,
                 project: int | None = _PROJECT,
                 title: str | None = typer.Option(None, "--title", help="Title of a new project.")) -> None:
    """Add the open round's unlabelled items to a Label Studio project (created with star's config if needed)."""
    from star.annotation.labelstudio_sync import connect, push_round, resolve
    from star.annotation.queries import open_round

    url, project = resolve(open_round(run_dir), url, project)
    done = push_round(connect(url, api_key_env), run_dir, url, project, title)
    typer.echo(f"{'created' if done.created else 'project'} {url}/projects/{done.project}: pushed {done.pushed} "
               f"task(s) of round {done.round_index}{f' ({done.present} already there)' if done.present else ''}")
    typer.echo(f"annotate them there, then: star labelstudio pull {run_dir}")


@labelstudio_app.command("pull")
def pull_command(run_dir: str = _RUN, url: str | None = _URL, api_key_env: str = _KEY,
                 project: int | None = _PROJECT, annotator: str = _ANNOTATOR) -> None:
    """Download the project's annotations (kept in round-<t>/labelstudio/) and import them, all or nothing."""
    from star.annotation.labelstudio_sync import connect, pull_round, resolve
    from star.annotation.queries import open_round
    from star.errors import ConfigError

    url, project = resolve(open_round(run_dir), url, project)
    if project is None:
        raise ConfigError(f"no Label Studio project recorded for {run_dir} at {url}",
                          hint=f"pass --project ID, or push first: star labelstudio push {run_dir} --url {url}")
    path, report = pull_round(connect(url, api_key_env), run_dir, url, project, annotator)
    typer.echo(f"pulled project {project}'s export to {path}")
    _say_imported(report, run_dir)
