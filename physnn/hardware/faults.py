"""What goes wrong on an emulated line: fault rates, their counters, a seeded injector.

The emulator (``physnn.hardware.emulator``) passes every frame through a
``FaultInjector``: corrupted and dropped frames in both directions, replies delayed past
the host's timeout, bursts of garbage, disconnects and board resets, all drawn from one seeded
stream so a faulty run can be repeated exactly.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from .protocol import Damaged, Frame, FrameDecoder


@dataclass(frozen=True)
class Faults:
    """What goes wrong on the emulated line. Rates are per frame, in either direction."""

    corrupt: float = 0.0
    """Probability that a frame has 1-3 bytes flipped."""
    drop: float = 0.0
    """Probability that a frame is lost."""
    delay: float = 0.0
    """Probability that a reply is held back by ``delay_s`` (set it past the host's timeout)."""
    delay_s: float = 1.0
    garbage: float = 0.0
    """Probability of a burst of random bytes on the line before a reply."""
    disconnect: float = 0.0
    """Probability per frame of pulling the cable (the pty hangs up, the socket closes)."""
    reset: float = 0.0
    """Probability per frame of a board reset (state wiped, silent for ``reset_s``)."""
    disconnect_after: tuple[int, ...] = ()
    """Frame counts at which to disconnect, e.g. (500,)."""
    reset_after: tuple[int, ...] = ()
    reset_s: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("corrupt", "drop", "delay", "garbage", "disconnect", "reset"):
            v = getattr(self, name)
            if not 0.0 <= v <= 0.5:
                raise ValueError(f"fault rate {name}={v} is not allowed; use a rate in [0, 0.5]")
        if self.corrupt + self.drop > 0.5:
            raise ValueError("corrupt + drop must stay <= 0.5, or nothing gets through")
        for name, hi in (("delay_s", 600.0), ("reset_s", 60.0)):
            if not 0.0 <= getattr(self, name) <= hi:
                raise ValueError(f"{name}={getattr(self, name)} is not allowed; use 0..{hi:g} s")
        for name in ("disconnect_after", "reset_after"):
            counts = tuple(int(v) for v in getattr(self, name))
            if any(v < 1 for v in counts):
                raise ValueError(f"{name} needs positive frame counts, got {counts}")
            object.__setattr__(self, name, counts)

    @property
    def any(self) -> bool:
        """True if any fault is switched on."""
        return any(getattr(self, f.name) for f in fields(self)
                   if f.name not in ("delay_s", "reset_s", "seed"))


@dataclass
class FaultStats:
    """What the injector did so far, frame by frame."""

    frames_in: int = 0
    frames_out: int = 0
    corrupted_in: int = 0
    corrupted_out: int = 0
    dropped_in: int = 0
    dropped_out: int = 0
    delayed: int = 0
    garbage_bursts: int = 0
    disconnects: int = 0
    resets: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The counters, with the damaged and lost fractions of all frames."""
        d: dict[str, Any] = asdict(self)
        frames = max(1, self.frames_in + self.frames_out)
        d["corrupted_fraction"] = (self.corrupted_in + self.corrupted_out) / frames
        d["dropped_fraction"] = (self.dropped_in + self.dropped_out) / frames
        return d


class FaultInjector:
    """Decides, frame by frame and seeded, what the line does to the traffic."""

    def __init__(self, faults: Faults):
        self.f = faults
        self.rng = random.Random(faults.seed)
        self.stats = FaultStats()
        self.pending: str | None = None
        """'disconnect' or 'reset', to be carried out by the emulator now."""
        self._frames = 0

    def _tick(self) -> None:
        self._frames += 1
        f, rng, n = self.f, self.rng, self._frames
        if n in f.reset_after or (f.reset and rng.random() < f.reset):
            self.pending = "reset"
        elif n in f.disconnect_after or (f.disconnect and rng.random() < f.disconnect):
            self.pending = self.pending or "disconnect"

    def _flip(self, raw: bytes) -> bytes:
        b = bytearray(raw)
        for _ in range(self.rng.randint(1, 3)):
            b[self.rng.randrange(len(b))] ^= self.rng.randint(1, 255)
        return bytes(b)

    def inbound(self, ev: Frame | Damaged) -> Frame | Damaged | None:
        """A request as the board receives it: as sent, damaged, or lost."""
        self.stats.frames_in += 1
        self._tick()
        if not isinstance(ev, Frame):
            return ev
        r = self.rng.random()
        if r < self.f.drop:
            self.stats.dropped_in += 1
            return None
        if r < self.f.drop + self.f.corrupt:
            self.stats.corrupted_in += 1
            seen = FrameDecoder().feed(self._flip(ev.encode()))
            return seen[0] if seen else None  # a hit in the header: the frame is just noise
        return ev

    def outbound(self, raw: bytes) -> list[tuple[float, bytes]]:
        """What goes on the line for one reply: (delay in s, bytes) pieces."""
        st, f, rng = self.stats, self.f, self.rng
        st.frames_out += 1
        self._tick()
        out: list[tuple[float, bytes]] = []
        if f.garbage and rng.random() < f.garbage:
            st.garbage_bursts += 1
            out.append((0.0, rng.randbytes(rng.randint(1, 64))))
        r = rng.random()
        if r < f.drop:
            st.dropped_out += 1
            return out
        if r < f.drop + f.corrupt:
            st.corrupted_out += 1
            raw = self._flip(raw)
        if f.delay and rng.random() < f.delay:
            st.delayed += 1
            out.append((f.delay_s, raw))
        else:
            out.append((0.0, raw))
        return out
