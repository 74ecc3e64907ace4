"""The efficiency ledger: device queries, digital FLOPs, twin cost, energy, wall time, memory.

Why a ledger: the claim that model-free local learning is cheaper than physics-aware
training or backpropagation is a claim about *costs*, so every run records them the same
way, whatever its learning rule:

- **device queries**: samples sent to the physical devices (training and inference apart);
- **digital FLOPs**: everything a computer does that the physical system does not. Counted
  with ``torch.utils.flop_counter`` extended to pointwise and reduction ops (the stock
  counter only knows matrix products, which would make an FDTD twin look free), split into
  forward and backward (ops run by autograd's backward engine);
- **twin cost** (PAT): FLOPs of the differentiable twin's forward and backward passes, plus
  the calibration queries and fitting FLOPs of a fitted twin;
- **energy**: device J/query (from the device description) x queries + an assumed digital
  J/FLOP x FLOPs (``train.digital_j_per_flop``; see docs/methods.md);
- **wall time** and **peak memory** of the run.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import flop_registry

from ..nn.counting import FlopDispatchMode
from .flops import FlopMeter

aten = torch.ops.aten

_POINTWISE: dict[str, int] = {
    # one FLOP per output element
    **dict.fromkeys(
        "add sub mul div neg abs sign sgn reciprocal sqrt rsqrt exp exp2 log log2 log1p expm1 "
        "pow tanh sigmoid relu gelu cos sin atan2 round floor ceil clamp clamp_min clamp_max "
        "maximum minimum gt lt ge le eq ne softplus softplus_backward threshold_backward "
        "sigmoid_backward tanh_backward hardtanh_backward polar complex angle "
        "_softmax_backward_data _log_softmax_backward_data nll_loss_backward".split(),
        1,
    ),
    # fused multiply-adds
    **dict.fromkeys("addcmul addcdiv lerp".split(), 2),
}
_REDUCTIONS: dict[str, int] = dict.fromkeys(
    "sum mean amax amin max min prod cumsum linalg_vector_norm norm var std _softmax "
    "_log_softmax nll_loss_forward".split(),
    1,
)
"""One FLOP per *input* element (the output may be a scalar)."""
_FOREACH: dict[str, int] = {
    "_foreach_add": 1, "_foreach_sub": 1, "_foreach_mul": 1, "_foreach_div": 1,
    "_foreach_sqrt": 1, "_foreach_neg": 1, "_foreach_reciprocal": 1, "_foreach_maximum": 1,
    "_foreach_addcmul": 2, "_foreach_addcdiv": 2, "_foreach_lerp": 2, "_foreach_pow": 1,
}


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):  # nearly every op: skip the tree walk
        return [obj]
    return [t for t in torch.utils._pytree.tree_leaves(obj) if isinstance(t, torch.Tensor)]


def _numel(obj: Any) -> int:
    return sum(t.numel() for t in _tensors(obj))


class _Tally:
    """FLOPs of one counting context, forward and backward apart."""

    def __init__(self) -> None:
        self.fwd = 0
        self.bwd = 0

    def add(self, flops: int, out: Any) -> int:
        if any(t.is_complex() for t in _tensors(out)):
            flops *= 4  # a complex multiply-add is four real ones
        if torch._C._current_autograd_node() is not None:  # inside loss.backward()
            self.bwd += flops
        else:
            self.fwd += flops
        return flops

    def mapping(self) -> dict[Any, Any]:
        """``custom_mapping`` for FlopCounterMode: torch's formulas plus pointwise ops."""

        def wrap_formula(formula):
            def count(*args, out_val=None, **kwargs):
                return self.add(int(formula(*args, out_val=out_val, **kwargs)), out_val)

            count._get_raw = True  # type: ignore[attr-defined]  # private torch flag: pass raw args
            return count

        def pointwise(cost: int, of_input: bool = False):
            def count(*args, out_val=None, **kwargs):
                ref = args[0] if of_input or out_val is None else out_val
                return self.add(cost * _numel(ref), out_val)

            count._get_raw = True  # type: ignore[attr-defined]  # private torch flag: pass raw args
            return count

        m: dict[Any, Any] = {op: wrap_formula(f) for op, f in flop_registry.items()}
        for name, cost in _POINTWISE.items():
            if hasattr(aten, name):
                m[getattr(aten, name)] = pointwise(cost)
        for name, cost in {**_REDUCTIONS, **_FOREACH}.items():
            if hasattr(aten, name):
                m[getattr(aten, name)] = pointwise(cost, of_input=True)

        def index_add(*args, out_val=None, **kwargs):  # (self, dim, index, source)
            source = args[3] if len(args) > 3 else kwargs["source"]
            return self.add(source.numel(), out_val)

        index_add._get_raw = True  # type: ignore[attr-defined]  # private torch flag: pass raw args
        m[aten.index_add] = index_add
        return m


class LedgerFlopMeter(FlopMeter):
    """A ``FlopMeter`` that also counts pointwise ops and splits forward from backward.

    ``totals[phase]`` keeps the meaning it has in ``FlopMeter`` (all FLOPs of a phase);
    ``backward[phase]`` is the part run by autograd's backward engine. The optimizer update
    and the loss count as forward.
    """

    def __init__(self, cache: bool = True) -> None:
        super().__init__(cache)
        self.backward: dict[str, int] = defaultdict(int)

    @contextmanager
    def _measure(self) -> Iterator[list[int]]:
        """Count the wrapped block, pointwise ops included; fills ``[total, backward]``."""
        tally = _Tally()
        result: list[int] = []
        with FlopDispatchMode(tally.mapping()):
            yield result
        result[:] = [tally.fwd + tally.bwd, tally.bwd]

    def _charge(self, phase: str, total: int, backward: int) -> None:
        self.totals[phase] += total
        self.backward[phase] += backward

    def split(self, phase: str) -> tuple[int, int]:
        """(forward, backward) FLOPs of ``phase``."""
        total, bwd = int(self.totals.get(phase, 0)), int(self.backward.get(phase, 0))
        return total - bwd, bwd

    def state_dict(self) -> dict[str, int]:
        """Totals and backward parts in one flat dict (``phase:backward`` keys), so a checkpoint
        written by a plain ``FlopMeter`` still loads."""
        return {**self.totals, **{f"{k}:backward": v for k, v in self.backward.items()}}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state_dict``; a state without backward parts counts them from zero."""
        self.totals = defaultdict(int, {k: v for k, v in state.items() if ":" not in k})
        self.backward = defaultdict(
            int, {k.split(":")[0]: v for k, v in state.items() if k.endswith(":backward")}
        )


# -- memory -----------------------------------------------------------------------------------
def _statm_bytes() -> tuple[int, int] | None:
    """(resident, resident anonymous) bytes of this process, or None off Linux."""
    try:
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        return int(fields[1]) * page, (int(fields[1]) - int(fields[2])) * page
    except (OSError, ValueError, IndexError):
        return None


def _rss_bytes() -> int:
    statm = _statm_bytes()
    if statm is not None:
        return statm[0]
    import resource  # not Linux: peak RSS of the whole process

    scale = 1 if os.uname().sysname == "Darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def _anon_bytes() -> int:
    """Resident anonymous memory (what tensors take): unlike the whole RSS it does not drop
    when the kernel reclaims the pages of mapped libraries, which would hide a run's growth."""
    statm = _statm_bytes()
    return statm[1] if statm is not None else _rss_bytes()


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_bytes() -> int | None:
    """The kernel's peak RSS (VmHWM) of this process, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemory:
    """Peak memory of a run: CUDA allocator peak on a GPU, peak RSS growth on the CPU.

    On Linux the kernel tracks the peak resident set size (VmHWM) exactly and for free;
    ``start`` resets it, so the peak reported is *above the RSS when the run started* (the
    process's own baseline: Python, torch, the data set). Elsewhere a background thread
    samples the RSS every ``interval_s`` (short allocations can be missed). The growth of
    anonymous memory still held at the end counts too: file pages the kernel reclaims during
    the run (a loaded machine, a memory cgroup) lower the whole RSS and could hide it.
    Memory the allocator keeps from earlier runs in the same process hides part of a later
    run's growth, so for clean numbers measure one run per process (as
    benchmarks/depth_scaling.py does).
    """

    def __init__(self, torch_device: str | torch.device = "cpu", interval_s: float = 0.05):
        self.device = torch.device(torch_device)
        self.interval_s = float(interval_s)
        self.method = "cuda_max_memory_allocated" if self.device.type == "cuda" else "rss_sampled"
        self._peak = 0
        self._base = 0
        self._base_anon = 0
        self._peak_anon = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeakMemory:
        """Take the baseline and begin tracking (the kernel's peak counter if it can be reset)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._base, self._base_anon = _rss_bytes(), _anon_bytes()
            if _reset_rss_peak() and _rss_peak_bytes() is not None:
                self.method = "rss_peak_kernel"
            else:
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, _rss_bytes())
            self._peak_anon = max(self._peak_anon, _anon_bytes())

    @property
    def peak_bytes(self) -> int:
        """Peak bytes above the start so far."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device) - self._base)
        if self.method == "rss_peak_kernel":
            self._peak = max(self._peak, _rss_peak_bytes() or 0)
        whole = max(self._peak, _rss_bytes()) - self._base
        anon = max(self._peak_anon, _anon_bytes()) - self._base_anon
        return max(0, whole, anon)

    def stop(self) -> int:
        """End the sampling thread, if any; returns the peak bytes above the baseline."""
        peak = self.peak_bytes
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return peak

    def __enter__(self) -> PeakMemory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the ledger ---------------------------------------------------------------------------------
DEFAULT_J_PER_FLOP = 1e-11
"""10 pJ per FLOP (100 GFLOP/J): a datacentre GPU near its peak fp32 efficiency. Optimistic
for CPUs (typically 1e-10 J/FLOP or more); configurable as ``train.digital_j_per_flop``."""


def ledger(
    *,
    method: str,
    metrics: dict[str, Any],
    devices: list,
    flops: FlopMeter,
    j_per_flop: float,
    wall_time_s: float,
    peak_memory_bytes: int,
    peak_memory_method: str,
    twin_calibration_queries: int = 0,
    twin_fit_flops: int = 0,
) -> dict[str, float | str]:
    """The ledger of one run (flat, so it fits an HDF5 attribute group).

    ``flops`` phases: ``train`` (the trainable digital layers, their loss and update),
    ``model`` (the differentiable twin or simulator that PAT and backprop differentiate
    through), ``eval`` (inference). A plain ``FlopMeter`` has no forward/backward
    split; its FLOPs then count as forward.
    """
    q_train = float(np.nansum(np.asarray(metrics.get("train_queries", []), dtype=float)))
    q_eval = float(np.nansum(np.asarray(metrics.get("eval_queries", []), dtype=float)))
    split = flops.split if isinstance(flops, LedgerFlopMeter) else (
        lambda p: (int(flops.totals.get(p, 0)), 0)
    )
    tr_f, tr_b = split("train")
    tw_f, tw_b = split("model")
    ev_f, ev_b = split("eval")
    samples = sum(d.accounting.samples for d in devices)
    dev_energy = sum(d.accounting.energy_j for d in devices)
    j_per_query = dev_energy / samples if samples else 0.0
    flops_train = tr_f + tr_b + tw_f + tw_b + int(twin_fit_flops)
    flops_eval = ev_f + ev_b
    e_dev_train = j_per_query * (q_train + twin_calibration_queries)
    e_dev_eval = j_per_query * q_eval
    e_dig_train = j_per_flop * flops_train
    e_dig_eval = j_per_flop * flops_eval
    return {
        "method": method,
        "queries_train": q_train,
        "queries_eval": q_eval,
        "twin_calibration_queries": float(twin_calibration_queries),
        "flops_train_fwd": float(tr_f),
        "flops_train_bwd": float(tr_b),
        "flops_model_fwd": float(tw_f),
        "flops_model_bwd": float(tw_b),
        "flops_twin_fit": float(twin_fit_flops),
        "flops_train_total": float(flops_train),
        "flops_eval": float(flops_eval),
        "flops_fwd": float(tr_f + tw_f + ev_f),
        "flops_bwd": float(tr_b + tw_b + ev_b),
        "device_j_per_query": float(j_per_query),
        "digital_j_per_flop": float(j_per_flop),
        "energy_device_train_j": e_dev_train,
        "energy_digital_train_j": e_dig_train,
        "energy_train_j": e_dev_train + e_dig_train,
        "energy_device_eval_j": e_dev_eval,
        "energy_digital_eval_j": e_dig_eval,
        "energy_total_j": e_dev_train + e_dig_train + e_dev_eval + e_dig_eval,
        "wall_time_s": float(wall_time_s),
        "peak_memory_bytes": float(peak_memory_bytes),
        "peak_memory_method": peak_memory_method,
    }



def run_ledger(
    cfg: Any,
    net: Any,
    trainer: Any,
    metrics: dict[str, Any],
    *,
    wall_time_s: float,
    memory: PeakMemory,
    peak_before: float = 0.0,
) -> dict[str, float | str]:
    """The ledger of a run in progress, from the runner's own objects (see ``ledger``).

    ``peak_before`` is the peak an interrupted earlier part of the run reached (resume).
    """
    t = cfg.train
    return ledger(
        method=str(t.method),
        metrics=metrics,
        devices=net.devices,
        flops=trainer.flops,
        j_per_flop=float(getattr(t, "digital_j_per_flop", DEFAULT_J_PER_FLOP)),
        wall_time_s=wall_time_s,
        peak_memory_bytes=int(max(peak_before, memory.peak_bytes)),
        peak_memory_method=memory.method,
        twin_calibration_queries=int(getattr(trainer, "twin_calibration_queries", 0)),
        twin_fit_flops=int(getattr(trainer, "twin_fit_flops", 0)),
    )


class SampledFlops:
    """Counts a repeated computation exactly once per call signature, or on every ``every``-th call.

    Differentiating through a simulator runs thousands of small ops per call, and counting
    each through Python dispatch costs many times the computation itself (and the acoustic
    cavity's C loop also runs its torch steps while a counter watches). A simulator's op
    sequence is fixed by the call's size up to small data-dependent parts (the acoustic
    membranes now take a fixed number of Newton steps; PAT's optical twin differs by about
    1e-5 relative between calls), so by default (``every=None``) each ``(key, n_samples)`` is
    counted exactly the first time and charged the same FLOPs on every later call. With an integer
    ``every`` the FLOPs per sample are measured on the first call and every ``every``-th
    after it, per key, and the calls in between are charged at the last measured rate (for a
    model whose op sequence depends on the data); ``every=1`` counts every call.
    """

    def __init__(self, meter: LedgerFlopMeter, phase: str, every: int | None = None):
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1 or None (once per signature), got {every}")
        self.meter, self.phase, self.every = meter, phase, every
        self.calls: dict[str, int] = defaultdict(int)
        self.rate: dict[str, tuple[float, float]] = {}
        self.exact: dict[str, tuple[int, int]] = {}
        """FLOPs (forward, backward) per ``"key|n_samples"`` (``every=None``)."""

    @contextmanager
    def count(self, key: str, n_samples: int) -> Iterator[None]:
        """Charge the wrapped call of ``n_samples`` under ``key``: measured, or as measured before."""
        i = self.calls[key]
        self.calls[key] += 1
        sig = f"{key}|{n_samples}"
        if self.every is None and sig in self.exact:
            yield
            fwd, bwd = self.exact[sig]
        elif self.every is None or i % self.every == 0 or key not in self.rate:
            probe = LedgerFlopMeter(cache=False)
            with probe.count(self.phase):
                yield
            fwd, bwd = probe.split(self.phase)
            self.rate[key] = (fwd / n_samples, bwd / n_samples)
            self.exact[sig] = (fwd, bwd)
        else:
            yield
            fwd, bwd = (round(r * n_samples) for r in self.rate[key])
        self.meter.totals[self.phase] += fwd + bwd
        self.meter.backward[self.phase] += bwd

    def state_dict(self) -> dict[str, Any]:
        """Call counts, rates and per-signature counts, so a resumed run charges the same."""
        return {"calls": dict(self.calls), "rate": dict(self.rate), "exact": dict(self.exact)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict`` (an empty state: every key is measured afresh)."""
        self.calls = defaultdict(int, state.get("calls", {}))
        self.rate = {k: tuple(v) for k, v in state.get("rate", {}).items()}
        self.exact = {k: (int(v[0]), int(v[1])) for k, v in state.get("exact", {}).items()}
