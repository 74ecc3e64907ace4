# issue 18: a run log is checked, locked, refuses code, and the CLI says why in one line
import io
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tomli_w
import torch
from conftest import cli_here
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from physnn.experiments.runlog import (
    content_digest,
    hold_run_log,
    lock_path,
    read_run,
    write_run,
)
from physnn.experiments.runner import run

REPO = Path(__file__).resolve().parents[1]


def physnn(*args: str, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The command in this process (what it does; test_cli.py starts the real entry point),
    or, with ``subprocess.run`` options such as ``preexec_fn``, in a process of its own."""
    if not kw:
        return cli_here(*args, cwd=cwd)
    return subprocess.run(
        [sys.executable, "-m", "physnn", *args], cwd=cwd, capture_output=True, text=True,
        timeout=600, **kw,
    )


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def tiny_toml(tiny_config, tmp_path) -> Path:
    tiny_config["name"] = "tiny"
    p = tmp_path / "tiny.toml"
    p.write_text(tomli_w.dumps(tiny_config))
    return p


def started_log(tiny_config, path: Path, epochs: int = 1) -> None:
    """A run log after ``epochs`` epochs of the tiny config (status running)."""
    tiny_config["name"] = "tiny"
    run(tiny_config, path, progress=False, stop_after=epochs)


def damage(path: Path, dataset: str, n: int = 64, seed: int = 0) -> None:
    """Overwrite ``n`` bytes inside ``dataset``'s stored data, in place, as a bad disk would."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    assert offset is not None and size >= n
    rng = np.random.default_rng(seed)
    with open(path, "r+b") as fh:
        fh.seek(offset + int(rng.integers(0, size - n + 1)))
        fh.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())


def reseal(path: Path) -> None:
    """Recompute the checksum after a deliberate edit (what an attacker would do)."""
    with h5py.File(path, "r+") as f:
        f.attrs["sha256"] = content_digest(f)


# -- 1, 4: damage is refused, never resumed or reported ------------------------------------


def test_damaged_checkpoint_is_refused_not_resumed(tiny_config, tiny_toml, tmp_path):
    log = tmp_path / "out" / "tiny" / "seed0.h5"
    started_log(tiny_config, log)
    before = log.read_bytes()
    damage(log, "checkpoint")
    p = physnn("train", str(tiny_toml), "--out", "out", "--no-progress", cwd=tmp_path)
    one_line_error(p, "out/tiny/seed0.h5 is damaged", "--overwrite")
    assert log.read_bytes() != before  # left as found, for a post-mortem
    with pytest.raises(ValueError, match="damaged"):
        read_run(log, checkpoint=True)
    tiny_config["train"]["epochs"] = 1
    run(tiny_config, log, progress=False, overwrite=True)  # the advice works
    assert read_run(log)["status"] == "complete"


def test_damaged_metrics_of_a_complete_log_are_refused(tiny_config, tmp_path):
    log = tmp_path / "a.h5"
    started_log(tiny_config, log, epochs=4)
    assert read_run(log)["status"] == "complete"
    damage(log, "metrics/test_acc", n=8)
    p = physnn("report", str(log), cwd=tmp_path)
    one_line_error(p, "damaged")


def test_every_byte_of_damage_is_refused_or_harmless(tiny_config, tmp_path):
    log = tmp_path / "a.h5"
    started_log(tiny_config, log, epochs=2)
    clean = read_run(log, checkpoint=True)
    raw = log.read_bytes()
    bad = tmp_path / "bad.h5"

    @settings(max_examples=120, deadline=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],  # a failure reports its first byte:
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # no long shrink
    @given(st.integers(0, len(raw) - 1), st.integers(1, 255))
    def flip(pos: int, xor: int) -> None:
        data = bytearray(raw)
        data[pos] ^= xor
        bad.write_bytes(bytes(data))
        try:
            got = read_run(bad, checkpoint=True)
        except ValueError as e:
            assert "\n" not in str(e)
            return
        # damage in the file's slack space: what is read is exactly what was written
        for k, v in clean["metrics"].items():
            np.testing.assert_array_equal(got["metrics"][k], v)
        assert got["config"] == clean["config"] and got["status"] == clean["status"]
        assert torch.equal(got["checkpoint"]["state"]["network"]["blocks.0.linear.weight"],
                           clean["checkpoint"]["state"]["network"]["blocks.0.linear.weight"])

    t0 = time.perf_counter()
    flip()
    assert time.perf_counter() - t0 < 30


def test_a_log_without_its_checksum_is_damaged(tiny_config, tmp_path):
    log = tmp_path / "a.h5"
    started_log(tiny_config, log)
    with h5py.File(log, "r+") as f:
        del f.attrs["sha256"]
    with pytest.raises(ValueError, match="does not match the checksum"):
        read_run(log)


def test_a_log_of_the_format_before_checksums(tiny_config, tmp_path):
    """Format 1 (no checksum) is still reported, but never resumed unverified, and a damaged
    checkpoint header is one line, not an UnpicklingError."""
    log = tmp_path / "a.h5"
    started_log(tiny_config, log)
    with h5py.File(log, "r+") as f:
        del f.attrs["sha256"]
        f.attrs["format_version"] = 1
    assert read_run(log)["status"] == "running"
    with pytest.raises(ValueError, match="without run-log checksums.*not resumed unverified"):
        run(tiny_config, log, progress=False)
    with h5py.File(log, "r") as f:
        offset = f["checkpoint"].id.get_offset()
    with open(log, "r+b") as fh:  # the zip header of torch.save's archive
        fh.seek(offset)
        fh.write(b"\x00" * 16)
    with pytest.raises(ValueError, match="checkpoint is damaged or holds objects") as e:
        read_run(log)
    assert "\n" not in str(e.value)


# -- 5: a log cannot run code ---------------------------------------------------------------


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_payload_is_refused_without_running(tiny_config, tiny_toml, tmp_path):
    folder = tmp_path / "out" / "tiny"
    marker = tmp_path / "pwned"
    for log in (folder / "seed0.h5", folder / "phyll" / "seed0.h5"):
        started_log(tiny_config, log, epochs=4 if "phyll" in str(log) else 1)
        buf = io.BytesIO()
        torch.save({"format": 2, "epoch": 1, "wall_time_s": 0.0,
                    "state": {"x": Payload(str(marker))}}, buf)
        with h5py.File(log, "r+") as f:
            del f["checkpoint"]
            f.create_dataset("checkpoint", data=np.frombuffer(buf.getvalue(), np.uint8))
        reseal(log)
    with pytest.raises(pickle.UnpicklingError):  # the payload works when unpickled blindly
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    cases = [
        ("report", str(folder / "seed0.h5")),
        ("train", str(tiny_toml), "--out", "out", "--no-progress"),
        ("compare", str(tiny_toml), "--out", "out", "--from-logs", "--methods", "phyll"),
    ]
    for args in cases:
        p = physnn(*args, cwd=tmp_path)
        one_line_error(p, "refused without loading")
        assert not marker.exists(), args
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert marker.exists()  # the test's payload is real


# -- 2: one writer per log ------------------------------------------------------------------


def test_a_second_writer_is_refused_in_this_process(tmp_path):
    log = tmp_path / "a.h5"
    with hold_run_log(log):
        assert lock_path(log).read_text().startswith(f"{os.getpid()} on ")
        with pytest.raises(ValueError, match=rf"being written by another run \(process {os.getpid()}"):
            with hold_run_log(log):
                pass
    assert not lock_path(log).exists()
    with hold_run_log(log):  # released: free again
        pass


def _wait_for(cond, what: str, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)


def _long_run(tiny_toml: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "physnn", "train", str(tiny_toml), "--out", "out",
         "--no-progress", "--threads", "1", "--set", "train.epochs=100000", *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_concurrent_runs_into_one_folder(tiny_toml, tmp_path):
    log = tmp_path / "out" / "tiny" / "seed0.h5"
    a = _long_run(tiny_toml, tmp_path)
    try:
        _wait_for(log.exists, "the first epoch")
        p = physnn("train", str(tiny_toml), "--out", "out", "--no-progress",
                   "--set", "train.epochs=100000", "--set", "train.lr=0.01", cwd=tmp_path)
        one_line_error(p, "out/tiny/seed0.h5 is being written", f"process {a.pid} on ")
        assert a.poll() is None
        # kill -9: the holder is gone, its lock with it; a leftover temp file is cleaned up
        a.send_signal(signal.SIGKILL)
        a.wait()
        leftover = log.parent / ".seed0.h5.abcd1234.part"
        leftover.write_bytes(b"half")
        b = _long_run(tiny_toml, tmp_path)
        try:
            # the lock names its holder before the holder cleans up: wait for both
            _wait_for(lambda: lock_path(log).exists() and str(b.pid) in lock_path(log).read_text(),
                      "the second run's lock")
            _wait_for(lambda: not leftover.exists(), "the leftover temporary file's removal")
            assert b.poll() is None
        finally:
            b.kill()
            b.wait()
    finally:
        a.kill()
        a.wait()


def test_sigterm_is_handled_like_ctrl_c(tiny_toml, tmp_path):
    log = tmp_path / "out" / "tiny" / "seed0.h5"
    a = _long_run(tiny_toml, tmp_path)
    _wait_for(log.exists, "the first epoch")
    a.send_signal(signal.SIGTERM)
    _, err = a.communicate(timeout=60)
    assert a.returncode == 143, err
    assert "terminated; rerun the same command to resume" in err and "Traceback" not in err
    assert not list(log.parent.glob(".*"))  # no temporary file, no lock file
    assert read_run(log)["status"] == "running"


def _workers(pid: int) -> list[int]:
    """The pool's worker processes among ``pid``'s children (not multiprocessing's resource
    tracker, which leaves on its own once the parent has gone)."""
    kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: nobody may reap an orphan in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_sigterm_stops_a_pools_workers_too(tiny_toml, tmp_path):
    """``kill`` on a ``--jobs 2`` run: the workers stop with it, each log at its last epoch
    (a pool's shutdown alone leaves the running jobs computing and the parent waiting)."""
    logs = [tmp_path / "out" / "tiny" / f"seed{s}.h5" for s in (0, 1)]
    a = _long_run(tiny_toml, tmp_path, "--seeds", "2", "--jobs", "2")
    workers: list[int] = []
    try:
        _wait_for(lambda: all(p.exists() for p in logs), "both seeds' first epoch")
        workers = _workers(a.pid)
        a.send_signal(signal.SIGTERM)
        _, err = a.communicate(timeout=60)
    finally:
        if a.poll() is None:  # the bug this test is about: take the tree down by hand
            for pid in _workers(a.pid):
                os.kill(pid, signal.SIGKILL)
            a.kill()
    assert a.returncode == 143, err
    assert "terminated; rerun the same command to resume" in err and "Traceback" not in err
    assert len(workers) >= 2 and all(_gone(pid) for pid in workers), workers
    assert not list(logs[0].parent.glob(".*"))  # no temporary file, no lock file
    assert [read_run(p)["status"] for p in logs] == ["running", "running"]


# -- the output folder ----------------------------------------------------------------------


def test_full_disk_keeps_the_previous_log(tiny_config, tiny_toml, tmp_path):
    log = tmp_path / "out" / "tiny" / "seed0.h5"
    started_log(tiny_config, log)
    before = log.read_bytes()

    def small_disk() -> None:  # writes past 20 kB fail (EFBIG) as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    p = physnn("train", str(tiny_toml), "--out", "out", "--no-progress", cwd=tmp_path,
               preexec_fn=small_disk)
    one_line_error(p, "cannot write run log out/tiny/seed0.h5", "errno", "the previous log", "intact")
    assert log.read_bytes() == before
    assert sorted(q.name for q in log.parent.iterdir()) == ["seed0.h5"]


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` made read-only for this process: a read-only bind mount when root (root
    writes through any mode bits), else the mode bits."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"root, and no read-only bind mount here: {bind.stderr.decode().strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr.decode().strip()}")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_folder_is_refused_before_any_work(tiny_toml, tmp_path):
    folder = tmp_path / "out" / "tiny"
    folder.mkdir(parents=True)
    with read_only(folder):
        p = physnn("train", str(tiny_toml), "--out", "out", "--no-progress", cwd=tmp_path)
    line = one_line_error(p, "cannot write into out/tiny")
    assert "Read-only file system" in line or "Permission denied" in line
    assert "logistic" not in p.stdout.lower()  # refused before the reference fit
    assert list(folder.iterdir()) == []


def test_overwrite_and_folders(tiny_config, tiny_toml, tmp_path):
    folder = tmp_path / "out" / "tiny"
    (folder / "seed0.h5").mkdir(parents=True)
    p = physnn("train", str(tiny_toml), "--out", "out", "--no-progress", "--overwrite",
               cwd=tmp_path)
    one_line_error(p, "is a folder, not a run log")
    with pytest.raises(ValueError, match="is a folder, not a run log"):  # not "does not exist"
        read_run(folder / "seed0.h5")
    (folder / "seed0.h5").rmdir()
    (folder / "summary.md").write_text("stale table\n")
    (folder / "summary.json").write_text("{}\n")
    p = physnn("train", str(tiny_toml), "--out", "out", "--no-progress", "--overwrite",
               "--set", "train.label_amplitude=2.0", cwd=tmp_path)  # fails: outside [0, 1]
    assert p.returncode != 0
    assert not (folder / "summary.md").exists() or "stale" not in (folder / "summary.md").read_text()
    assert not (folder / "summary.json").exists() or (folder / "summary.json").read_text() != "{}\n"


def test_every_kind_of_value_survives_its_checksum(tmp_path):
    """Strings, lists of strings (stored as variable-length object arrays), numbers and
    arrays read back under the checksum they were written with."""
    rec = {"config": {"a": [1, "b"]}, "metrics": {"x": [1.0, float("nan")]},
           "accounting": {"block0": {"names": ["x", "yy"], "n": 3, "f": 0.5, "s": "t"}},
           "reference": {"who": "me", "acc": 0.9}, "predictions": {"p": np.arange(4)}}
    write_run(tmp_path / "a.h5", rec)
    got = read_run(tmp_path / "a.h5")
    assert list(got["accounting"]["block0"]["names"]) == ["x", "yy"]
    assert got["reference"] == {"who": "me", "acc": 0.9}


def test_write_run_refuses_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write run log"):
        write_run(blocker / "a.h5", {"config": {}, "metrics": {}})
