"""The trackers star drives: thin adapters around accelerate's TensorBoard, MLflow and W&B tracker classes.

Each adapter starts accelerate's tracker with the run's settings, records in `state` (a dict
saved in the run directory) what identifies the tracker run, so that a resumed run logs into
the same one, and logs a round's scalars and figures at step = the round's index.

    tensorboard  events in <logging_dir>/tensorboard (the default logging_dir, one run's own),
                 or <logging_dir>/<run_name> (a logging_dir shared by several runs); images too
    mlflow       params, metrics, figures as artifacts (figures/round-<t>/*.png), in the store at
                 tracking.mlflow_tracking_uri, $MLFLOW_TRACKING_URI or a file store <logging_dir>/mlruns
    wandb        config, history with images; files in $WANDB_DIR or <logging_dir>/wandb
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, ClassVar

from star.config import TrackingConfig
from star.errors import ConfigError
from star.tracking.figures import pixels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Params = Mapping[str, Any]
Scalars = Mapping[str, int | float]


@dataclass(frozen=True)
class Settings:
    """tracking.* resolved for one run: paths absolute, run_name filled in."""

    project: str
    run_name: str
    logging_dir: Path
    own_dir: bool  # logging_dir is the run's own (the default, inside the run directory)
    mlflow_tracking_uri: str | None
    wandb_entity: str | None

    @classmethod
    def resolve(cls, tracking: TrackingConfig, output_dir: str, run_path: Path) -> Settings:
        """The settings of the run in `run_path` (output_dir as the config gives it: the default run name)."""
        own = tracking.logging_dir is None
        logging_dir = (run_path / "tracking" if own else Path(tracking.logging_dir or ".")).resolve()
        return cls(tracking.project, tracking.run_name or output_dir, logging_dir, own,
                   tracking.mlflow_tracking_uri, tracking.wandb_entity)


class Backend:
    """One tracker of a run: start (new or resumed), hyperparameters, rounds, finish."""

    name: ClassVar[str]
    module: ClassVar[str]  # imported to use it
    package: ClassVar[str]  # pip installs it

    def __init__(self, settings: Settings, state: dict[str, Any]) -> None:
        self.settings, self.state = settings, state
        self.tracker: Any = None

    def start(self) -> None:
        """Start accelerate's tracker: a new tracker run, or the one `state` names."""
        raise NotImplementedError

    def log_params(self, params: Params) -> None:
        self.tracker.store_init_configuration(dict(params))

    def log_round(self, step: int, scalars: Scalars, figures: Mapping[str, Figure]) -> None:
        raise NotImplementedError

    def finish(self, ok: bool) -> None:
        self.tracker.finish()

    def where(self) -> str:
        """Where the logs go, for log.txt."""
        raise NotImplementedError


def _path_safe(name: str) -> PurePath:
    """A run name as a relative path ('runs/cmp/pe/seed-0' stays nested; '/', '..' and '.' parts dropped)."""
    parts = [p for p in PurePath(name).parts if p not in ("..", ".") and p != PurePath(name).anchor]
    return PurePath(*parts) if parts else PurePath("run")


class TensorBoard(Backend):
    name, module, package = "tensorboard", "tensorboard", "tensorboard"

    def start(self) -> None:
        from accelerate.tracking import TensorBoardTracker

        s = self.settings
        default = s.logging_dir / ("tensorboard" if s.own_dir else _path_safe(s.run_name))
        path = Path(self.state.setdefault("logging_dir", str(default)))
        self.tracker = TensorBoardTracker(path.name, path.parent)  # writes to parent / name
        self.tracker.start()

    def log_round(self, step: int, scalars: Scalars, figures: Mapping[str, Figure]) -> None:
        self.tracker.log(dict(scalars), step=step)
        images = {f"figures/{name}": pixels(fig)[None] for name, fig in figures.items()}  # (1, H, W, 3) each
        self.tracker.log_images(images, step=step, dataformats="NHWC")
        self.tracker.writer.flush()

    def where(self) -> str:
        return self.state["logging_dir"]


def _file_store(uri: str) -> bool:
    """Is `uri` MLflow's file store (a file: URI or a plain path)?"""
    return uri.startswith("file:") or "://" not in uri and not uri.startswith(("sqlite:", "databricks"))


class MLflow(Backend):
    name, module, package = "mlflow", "mlflow", "mlflow-skinny"

    def start(self) -> None:
        import mlflow
        from accelerate.tracking import MLflowTracker

        s = self.settings
        uri = self.state.setdefault("tracking_uri", s.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                                    or (s.logging_dir / "mlruns").as_uri())
        if _file_store(uri):  # MLflow 3 refuses its file store unless asked; it is what a run folder of its own needs
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        self.tracker = MLflowTracker(experiment_name=self.state.setdefault("experiment", s.project),
                                     run_id=self.state.get("run_id"), run_name=s.run_name)
        self.tracker.start()
        self.state["run_id"] = self.tracker.active_run.info.run_id

    def log_round(self, step: int, scalars: Scalars, figures: Mapping[str, Figure]) -> None:
        self.tracker.log(dict(scalars), step=step)
        for name, fig in figures.items():
            self.tracker.log_figure(fig, f"figures/round-{step}/{name}.png")

    def finish(self, ok: bool) -> None:
        if ok:
            self.tracker.finish()
        else:
            import mlflow

            mlflow.end_run(status="FAILED")

    def where(self) -> str:
        return f"{self.state['tracking_uri']}, experiment {self.state['experiment']!r}, run {self.state['run_id']}"


class WandB(Backend):
    name, module, package = "wandb", "wandb", "wandb"

    def start(self) -> None:
        from accelerate.tracking import WandBTracker

        s, state = self.settings, self.state
        folder = Path(state.setdefault("dir", os.environ.get("WANDB_DIR") or str(s.logging_dir)))
        folder.mkdir(parents=True, exist_ok=True)
        if state.get("run_id"):
            wait_for_a_fresh_wandb_second(folder / "wandb", state["run_id"])
        kwargs: dict[str, Any] = {"name": s.run_name, "dir": str(folder), "id": state.get("run_id"), "resume": "allow"}
        if state.setdefault("entity", s.wandb_entity) is not None:
            kwargs["entity"] = state["entity"]
        self.tracker = WandBTracker(state.setdefault("project", s.project), **kwargs)
        self.tracker.start()
        state["run_id"] = self.tracker.run.id

    def log_round(self, step: int, scalars: Scalars, figures: Mapping[str, Figure]) -> None:
        import wandb

        images = {f"figures/{name}": wandb.Image(pixels(fig)) for name, fig in figures.items()}
        self.tracker.log({**scalars, **images}, step=step, commit=True)  # the row is committed now, not held until the next step

    def finish(self, ok: bool) -> None:
        self.tracker.run.finish(exit_code=0 if ok else 1)

    def where(self) -> str:
        return f"project {self.state['project']!r}, run {self.state['run_id']}, files in {self.state['dir']}"


def wait_for_a_fresh_wandb_second(folder: Path, run_id: str) -> None:
    """Sleep into the next second if run `run_id` already has a local W&B folder stamped with this one.

    W&B names a run's local folder <mode>-<YYYYmmdd_HHMMSS>-<id> by its start second. A resume that
    starts the same run id within the second of the crashed start writes into that folder, and the
    resumed segment's records are lost (measured with wandb 0.31, offline).
    """
    now = time.time()
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now))
    if any(folder.glob(f"*-{stamp}-{run_id}")):
        time.sleep(1.0 - now % 1.0 + 0.01)


#: The trackers by the name `tracking.log_with` takes (config.TRACKER_NAMES lists the same; a test pins them).
BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (TensorBoard, MLflow, WandB)}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_installed(names: Sequence[str]) -> None:
    """Raise one ConfigError naming each requested tracker whose package is missing, with the pip command."""
    missing = [BACKENDS[name] for name in names if not _importable(BACKENDS[name].module)]
    if missing:
        raise ConfigError(
            "tracking.log_with: " + "; ".join(f"{b.name} needs the {b.package} package, which is not installed"
                                              for b in missing),
            hint=f'pip install "star-al[tracking]" (or only what is missing: pip install {" ".join(b.package for b in missing)})')
