"""A run's trackers over its life: start or resume them, send each finished round once, finish.

`track_run` is what the loop uses: on the main process with `tracking.log_with` set it starts
every tracker (logging the resolved config once, as hyperparameters), sends the finished rounds
not sent yet (`sync`, called again after each round's metrics.json is written), and finishes
them when the block ends. `DIR/tracking.json` records, per tracker, what identifies its tracker
run (MLflow run id, W&B run id, TensorBoard log dir) and the last round sent, so a resumed run
logs into the same tracker run and sends every round exactly once, at step = the round's index.
A tracker that fails while the run goes on is dropped with a warning, never the run; what it
missed is sent, in order, on the next resume.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from star.config import RunConfig
from star.errors import ConfigError
from star.store.io import read_json, write_json
from star.store.runs import RunDir
from star.tracking.backends import BACKENDS, Backend, Settings
from star.tracking.figures import round_figures
from star.tracking.values import hyperparameters, round_scalars

log = logging.getLogger("star.tracking")


def _warn(message: str) -> None:
    """Say it on stderr (the run goes on) and in log.txt."""
    log.warning(message)
    print(f"warning: {message}", file=sys.stderr)


def read_state(run: RunDir) -> dict[str, Any]:
    """DIR/tracking.json: per tracker name, what identifies its tracker run and the last round sent ({} if none)."""
    path = run.tracking_path
    if not path.is_file():
        return {}
    try:
        state = read_json(path)
    except (OSError, ValueError) as e:
        _warn(f"{path} could not be read ({e}); the trackers start new tracker runs")
        return {}
    return state if isinstance(state, dict) else {}


def _up_to_date(config: RunConfig, run: RunDir) -> bool:
    """A finished run whose every tracker has had the config and every round: nothing to start (a no-op resume)."""
    done, state = len(run.finished_rounds()), read_state(run)
    if done < config.al.rounds:
        return False
    return all(state.get(name, {}).get("config_logged") and state[name].get("last_round", -1) == done - 1
               for name in config.tracking.log_with)


class RunTracking:
    """The started trackers of one run (none on other processes, or without `tracking.log_with`)."""

    def __init__(self, run: RunDir, backends: list[Backend], state: dict[str, Any]) -> None:
        self.run, self.backends, self.state = run, backends, state

    def _save(self) -> None:
        write_json(self.run.tracking_path, self.state)

    @classmethod
    def start(cls, config: RunConfig, run: RunDir, enabled: bool = True) -> RunTracking:
        """Start (or resume) each tracker of `config.tracking.log_with`, log the config once, send missed rounds."""
        if not enabled or not config.tracking.log_with or _up_to_date(config, run):
            return cls(run, [], {})
        from accelerate import PartialState

        PartialState()  # accelerate's trackers ask it which process is the main one (one process: a no-op state)
        settings = Settings.resolve(config.tracking, config.output_dir, run.path)
        tracking = cls(run, [], read_state(run))
        for name in config.tracking.log_with:
            fresh = name not in tracking.state
            backend = BACKENDS[name](settings, tracking.state.setdefault(name, {}))
            try:
                backend.start()
            except Exception as e:  # any failure to start becomes one error naming the tracker
                if fresh:  # nothing of it to resume: the next start takes the (fixed) settings anew
                    tracking.state.pop(name)
                tracking._save()  # the trackers started so far are resumed, not started twice
                tracking.finish(ok=False)
                raise ConfigError(f"tracking.log_with: {name} could not start: {type(e).__name__}: {e}",
                                  hint=f"check tracking.* and {name}'s own settings (login, server); the run directory "
                                       f"is kept: `star run --resume {run.path}` continues, or drop {name} from "
                                       "tracking.log_with in its config.yaml") from e
            tracking.backends.append(backend)
            log.info("tracking: %s -> %s", name, backend.where())
        tracking._save()  # the tracker runs' ids, before anything is sent to them
        tracking._log_config(hyperparameters(config.model_dump(mode="json"), str(run.path.resolve())))
        tracking.sync()
        return tracking

    def _log_config(self, params: dict[str, Any]) -> None:
        """The resolved config as hyperparameters, once per tracker run (a resume does not log it again)."""
        for backend in list(self.backends):
            if backend.state.get("config_logged"):
                continue
            if self._attempt(backend, "the config", lambda b=backend: b.log_params(params)):
                backend.state["config_logged"] = True
                self._save()

    def sync(self) -> None:
        """Send every finished round each tracker has not had yet, in order, at step = round index."""
        if not self.backends:
            return
        finished = self.run.metrics()  # rounds 0..n-1, in order
        figures: dict[int, Any] = {}
        for backend in list(self.backends):
            for t in range(backend.state.get("last_round", -1) + 1, len(finished)):
                if t not in figures:
                    figures[t] = round_figures(finished[: t + 1])
                sent = self._attempt(backend, f"round {t}",
                                     lambda b=backend, t=t: b.log_round(t, round_scalars(finished[t]), figures[t]))
                if not sent:
                    break
                backend.state["last_round"] = t
                self._save()

    def _attempt(self, backend: Backend, what: str, send: Callable[[], None]) -> bool:
        """Run `send`; on failure drop the tracker for the rest of this process (warned) and return False."""
        try:
            send()
            return True
        except Exception as e:  # noqa: BLE001 - whatever a tracker raises, the run goes on without it
            _warn(f"tracking: {backend.name} failed to log {what} ({type(e).__name__}: {e}); it logs nothing more in "
                  f"this process, and `star run --resume {self.run.path}` sends what it missed")
            self.backends.remove(backend)
            with contextlib.suppress(Exception):
                backend.finish(ok=False)
            return False

    def finish(self, ok: bool) -> None:
        """End every tracker run (failed when `ok` is False); a tracker failing here only warns."""
        for backend in self.backends:
            try:
                backend.finish(ok)
            except Exception as e:  # noqa: BLE001 - a tracker failing to close must not hide the run's outcome
                _warn(f"tracking: {backend.name} failed to finish ({type(e).__name__}: {e})")
        self.backends = []


@contextlib.contextmanager
def track_run(config: RunConfig, run: RunDir, enabled: bool = True) -> Iterator[RunTracking]:
    """The run's trackers while the block runs (`enabled`: this is the main process); finished on the way out,
    as failed if the block raised (a signal's stop included)."""
    tracking = RunTracking.start(config, run, enabled)
    ok = False
    try:
        yield tracking
        ok = True
    finally:
        tracking.finish(ok)

