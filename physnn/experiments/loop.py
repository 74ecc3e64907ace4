"""The one epoch loop: resume from a run log, run epochs, write the log after each one.

``physnn train`` and ``physnn continual`` differ in what an epoch does and what their run
log holds, not in how a run survives a crash. That part lives here once: a run log of a
different config is refused (a key added to the config since the log was written counts at
its default, ``config.same_config``); a complete one is returned as it is; an unfinished one is
resumed from its checkpoint (the session's whole state, written after every epoch), so a
resumed run reaches the numbers an uninterrupted one would. The log is locked for the whole
run, so two runs into one folder never overwrite each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from .._version import __version__
from .config import same_config
from .jobs import report_progress
from .runlog import hold_run_log, read_run, write_run

CHECKPOINT_FORMAT = 2
"""Layout of a run log's checkpoint: ``{format, epoch, wall_time_s, state}``. Format 1
(physnn before the typed config) kept the network and trainer at the top level; its logs
still load for ``report`` and ``compare --from-logs`` but cannot be resumed."""


class Session(Protocol):
    """One run in progress: the objects an epoch loop drives and checkpoints."""

    def begin(self, resumed: dict[str, Any] | None, clock: Callable[[], float]) -> None:
        """Called once before the first epoch of this process (``resumed``: the log resumed;
        ``clock()``: the run's wall time so far, earlier interrupted parts included)."""
        ...

    def epoch(self, epoch: int) -> dict[str, str]:
        """Train (and evaluate) epoch ``epoch`` (0-based); the progress bar's postfix."""
        ...

    def record(self) -> dict[str, Any]:
        """The run log's fields besides the common ones (metrics, accounting, ...)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue identically."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        ...

    def end(self) -> None:
        """Called once after the last epoch of this process."""
        ...


def _resume_point(out: Path, config: dict[str, Any]) -> tuple[dict[str, Any] | None, dict | None]:
    """(the previous log, its checkpoint) of ``out``; refuses a log of another config."""
    if not out.exists():
        return None, None
    prev = read_run(out, checkpoint=True)
    if not same_config(prev["config"], config):
        raise ValueError(f"{out} holds a run of a different config; choose another --out or overwrite")
    ck = prev.get("checkpoint")
    if prev.get("status") != "complete" and int(prev.get("format_version", 1)) < 2:
        raise ValueError(
            f"{out} was written by a physnn without run-log checksums: report and compare "
            "--from-logs still read it, but it is not resumed unverified; rerun with "
            "--overwrite or another --out"
        )
    if prev.get("status") != "complete" and ck is not None and ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{out} was written by an earlier physnn (checkpoint format {ck.get('format', 1)}, this "
            f"one reads {CHECKPOINT_FORMAT}): report and compare --from-logs still read it, but it "
            "cannot be resumed; rerun with --overwrite or another --out"
        )
    return prev, ck


def run_epochs(
    session: Session,
    out: str | Path,
    *,
    config: dict[str, Any],
    name: str,
    seed: int,
    epochs: int,
    desc: str,
    progress: bool = True,
    overwrite: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run ``session`` to ``epochs`` epochs, resuming ``out``; return the run log as read back.

    ``stop_after`` ends this process's part after that many epochs, as an interruption would.
    """
    out = Path(out)
    with hold_run_log(out):  # one writer per log, the folder proven writable before any work
        return _run_held(session, out, config=config, name=name, seed=seed, epochs=epochs,
                         desc=desc, progress=progress, overwrite=overwrite, stop_after=stop_after)


def _run_held(session: Session, out: Path, *, config: dict[str, Any], name: str, seed: int,
              epochs: int, desc: str, progress: bool, overwrite: bool,
              stop_after: int | None) -> dict[str, Any]:
    if overwrite:
        if out.is_dir():
            raise ValueError(f"{out} is a folder, not a run log: --overwrite removes run logs "
                             "only; choose another --out")
        out.unlink(missing_ok=True)  # a failed restart must not leave the old log looking current
    prev, ck = _resume_point(out, config)
    if prev is not None and prev.get("status") == "complete":
        return prev
    start, wall_before = 0, 0.0
    created = datetime.now(UTC).isoformat(timespec="seconds")
    if prev is not None and ck is not None:
        session.load_state_dict(ck["state"])
        start, wall_before = int(ck["epoch"]), float(ck["wall_time_s"])
        created = prev.get("created", created)
    t0 = 0.0
    session.begin(prev if ck is not None else None, lambda: time.perf_counter() - t0)
    t0 = time.perf_counter() - wall_before  # after begin: reference fits are not training time
    last = epochs if stop_after is None else min(epochs, start + stop_after)
    bar = tqdm(
        range(start, last), total=epochs, initial=start, desc=desc, unit="epoch", leave=False,
        disable=None if progress else True,  # None: bars only on a terminal, not in logs
    )
    report_progress(start, epochs)  # in a pool worker the parent's bar shows it instead
    for epoch in bar:
        postfix = session.epoch(epoch)
        if postfix:
            bar.set_postfix(postfix)
        wall = time.perf_counter() - t0
        write_run(out, {
            "status": "complete" if epoch + 1 == epochs else "running",
            "physnn_version": __version__,
            "name": name,
            "seed": seed,
            "created": created,
            "wall_time_s": wall,
            "config": config,
            **session.record(),
            "checkpoint": {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "wall_time_s": wall,
                "state": session.state_dict(),
            },
        })
        report_progress(epoch + 1, epochs)
    bar.close()
    session.end()
    return read_run(out)
