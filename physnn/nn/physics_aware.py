"""Physics-aware differentiation: measure on the device, take the gradient from a twin.

A physical system answers queries but has no gradient. Physics-aware training (Wright et
al., Nature 601:549, 2022) runs the forward pass on the device, so everything downstream
sees real measurements, and backpropagates through a differentiable *twin* evaluated at the
same input: the gradient is ``J_twin(x)^T dL/dy`` at the measured ``y``. It is exact where
the twin is exact and biased by the sim-to-real gap where it is not.

``physics_aware`` is that rule as one ``torch.autograd.Function`` application, so a
physical layer joins ordinary autograd: ``loss.backward()`` runs the twin's backward pass
where the device sits in the graph. ``twin`` may be

- another ``physnn.core.Device`` with ``forward_with_grad`` (a simulator, a fitted
  surrogate);
- a list of ``(weight, device)`` pairs, mixed as ``sum(w * t.forward_with_grad(x))`` (PAT's
  mismatch mixes the exact model with another random cavity);
- ``device`` itself, or None: in silico, backprop through the simulator. One differentiable
  pass then is the measurement (one query, one noise draw), as a simulator run would be.

FLOPs: the measurement is the physical system's work and never counts as digital FLOPs. The
twin's forward and backward passes are digital work; with a ``flops`` meter they are charged
to it (keys ``f"{name}:forward"`` and ``f"{name}:backward"``) and hidden from any FLOP
counter the caller has open, so a ledger can keep the trainable layers apart from the cost of
differentiating through the physics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from ..core.device import Device
from .counting import TwinMeter, hidden_from_flop_counters

Twin: TypeAlias = Device | Sequence[tuple[float, Device]]
"""A differentiable device, or ``(weight, device)`` pairs mixed by their weights."""


def twin_parts(twin: Twin | None) -> list[tuple[float, Device]] | None:
    """``twin`` as ``(weight, device)`` pairs; None for a single device (used as is)."""
    if twin is None or isinstance(twin, Device):
        return None
    parts = [(float(w), t) for w, t in twin]
    if not parts:
        raise ValueError("twin: an empty list of (weight, device) pairs; give at least one")
    return parts


def twin_devices(device: Device, twin: Twin | None) -> list[Device]:
    """The twin's devices other than ``device`` itself (whose state a checkpoint adds)."""
    if twin is None or twin is device:
        return []
    if isinstance(twin, Device):
        return [twin]
    return [t for _, t in twin if t is not device]


def check_twin(device: Device, twin: Twin | None) -> None:
    """Raise a ValueError when ``twin`` cannot supply ``device``'s gradient."""
    if twin is None:
        parts = [device]
    elif isinstance(twin, Device):
        parts = [twin]
    else:
        parts = [t for _, t in twin_parts(twin) or []]
    for t in parts:
        if not t.differentiable:
            raise ValueError(
                f"twin {t.spec.name} is a black box (no forward_with_grad); use a simulator or "
                "a fitted surrogate as the twin"
            )
        if (t.spec.n_in, t.spec.n_out) != (device.spec.n_in, device.spec.n_out):
            raise ValueError(
                f"twin {t.spec.name} maps {t.spec.n_in} -> {t.spec.n_out}, but the device "
                f"{device.spec.name} maps {device.spec.n_in} -> {device.spec.n_out}"
            )


@contextmanager
def _charged(meter: TwinMeter | None, key: str, n: int) -> Iterator[None]:
    """Charge the block to ``meter`` (hidden from enclosing counters), or leave it visible."""
    if meter is None:
        yield
        return
    with hidden_from_flop_counters(), meter.count(key, n):
        yield


def _keep_graph() -> bool:
    """Whether the backward pass running now keeps its graph (``retain_graph``)."""
    probe = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if probe is None else bool(probe())


class PhysicsAwareFunction(torch.autograd.Function):
    """The autograd node behind ``physics_aware`` (call that, not this)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        device: Device,
        twin: Twin | None,
        meter: TwinMeter | None,
        name: str,
    ) -> torch.Tensor:
        """Measured output; the twin's graph at the same input is kept for the backward."""
        n = x.shape[0]
        in_silico = twin is None or twin is device
        with hidden_from_flop_counters(), torch.enable_grad():  # the device's own work
            z = x.detach().requires_grad_()
            if in_silico:
                out = device.forward_with_grad(z)
                measured = out.detach()
            else:
                measured = device(x.detach())
        if not in_silico:
            parts = twin_parts(twin)
            with _charged(meter, f"{name}:forward", n), torch.enable_grad():
                if parts is None:
                    assert isinstance(twin, Device)
                    out = twin.forward_with_grad(z)
                else:
                    out = sum(w * t.forward_with_grad(z) for w, t in parts)  # type: ignore[assignment]
        ctx.graph = (z, out)  # type: ignore[attr-defined]
        ctx.meter, ctx.name = meter, name  # type: ignore[attr-defined]
        return measured

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        """``J_twin(x)^T grad``: the twin's own backward pass, charged to the meter."""
        if ctx.graph is None:
            raise RuntimeError(
                "physics_aware: the twin's graph was freed by an earlier backward pass; pass "
                "retain_graph=True to the first backward to differentiate twice"
            )
        z, out = ctx.graph
        keep = _keep_graph()
        grad = grad.contiguous()  # the layout a leaf's .grad gets: same numbers as before
        with _charged(ctx.meter, f"{ctx.name}:backward", grad.shape[0]):
            # backward, not autograd.grad: reentrant checkpoints in a simulator need it
            torch.autograd.backward(out, grad, retain_graph=keep)
        g, z.grad = z.grad, None
        if not keep:
            ctx.graph = None
        return g, None, None, None, None


def physics_aware(
    x: torch.Tensor,
    device: Device,
    twin: Twin | None = None,
    *,
    flops: TwinMeter | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """``device(x)`` in the forward pass, the twin's vector-Jacobian product in the backward.

    ``twin``: a differentiable device, ``(weight, device)`` pairs, or ``device`` itself / None
    (in silico). ``flops``: a ``physnn.nn.counting.TwinMeter`` the twin's passes are
    charged to, under ``name`` (default: the device's kind). Where no gradient is needed
    (``x`` does not require one, or autograd is off) this is the plain measurement ``device(x)``:
    nothing upstream trains, so no twin is run.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        with hidden_from_flop_counters():
            return device(x)
    check_twin(device, twin)
    key = device.spec.name if name is None else name
    out = PhysicsAwareFunction.apply(x, device, twin, flops, key)
    assert isinstance(out, torch.Tensor)
    return out
