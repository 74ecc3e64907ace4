"""``sim:microwave``: the metasurface cavity as a device (see the package docstring for the physics)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Self

import torch

from ...core.device import Device, DeviceSpec, Domain
from ...core.effects import Effect, apply_effects, make_effects
from ...core.perturbation import Perturbable, Sudden
from .config import LEVELS, MicrowaveConfig
from .geometry import Dipoles, build_dipoles
from .green import green_2d, pair_distances, radiation_kernel


class MetasurfaceCavity(Perturbable, Device):
    """``sim:microwave``: a seeded 2-D coupled-dipole cavity with a programmable metasurface.

    Dipole order: transmitters, receivers, wall dipoles, scatterers, metasurface elements
    (feature ``j`` owns elements ``j * elements_per_feature ...``). See the package docstring
    for the physics; ``transfer`` gives the complex transmission, ``dipole_moments``
    the dense reference solve, ``plot_spectra`` and ``plot_geometry`` the pictures.
    """

    differentiable = True
    SUDDEN_ACTIONS = {"move": {"count": 1, "distance": 0.5}, "flip": {"count": 4}}
    """Sudden changes: ``move`` displaces ``count`` environment scatterers by ``distance``
    (lambda0) in seeded directions (an object moved in the room); ``flip`` inverts the
    response of ``count`` metasurface elements (a diode soldered the wrong way round or a
    bias line swapped: the element's on and off states trade places)."""
    DRIFT_COUPLING = -1e-4
    """1/K: relative shift of every dipole's resonance per kelvin: thermal expansion of an
    aluminium enclosure (-23 ppm/K) plus the temperature coefficients of the elements' diodes
    and the PCB substrate (order -1e-4/K together)."""
    DRIFT_UNIT = "1/K"

    def __init__(self, config: MicrowaveConfig | None = None) -> None:
        cfg = config if config is not None else MicrowaveConfig()
        self.config = cfg
        self.noise: list[Effect] = make_effects(cfg.noise)
        period = cfg.switch_time_s + cfg.measure_time_s
        spec = DeviceSpec(
            name="sim:microwave",
            n_in=cfg.n_in,
            n_out=cfg.n_out,
            domain=Domain(levels=LEVELS),
            output_units="|S21| x gain",
            time_per_query_s=period,
            energy_per_query_j=cfg.source_power_w * cfg.measure_time_s + cfg.bias_power_w * period,
        )
        super().__init__(spec, seed=cfg.seed, clip=cfg.clip)
        self.n_links = cfg.n_tx * cfg.n_rx
        self.n_freq = cfg.n_out // self.n_links
        self.n_ant = cfg.n_tx + cfg.n_rx
        self.n_ms = cfg.n_in * cfg.elements_per_feature
        self.f0_ghz = 0.5 * (cfg.f_min_ghz + cfg.f_max_ghz)
        self.frequencies_ghz = torch.linspace(
            cfg.f_min_ghz, cfg.f_max_ghz, self.n_freq, dtype=torch.float64
        )
        self.nu = self.frequencies_ghz / self.f0_ghz
        self._set_dipoles(build_dipoles(cfg, self.n_ms))
        self._precompute()
        self._cache: dict[tuple[str, torch.dtype], dict[str, torch.Tensor]] = {}
        self._flipped: torch.Tensor | None = None
        self.gain = float(cfg.gain) if cfg.gain is not None else self._reference_gain()
        self._init_perturbations(cfg.perturbations)
        if self.perturbed:
            self._pristine = (self.positions.clone(), self.res_fixed.clone(), self.ms_spread.clone())

    @classmethod
    def from_description(cls, **description: Any) -> Self:
        """Build from a description's keys (the ``sim:microwave`` entry point); an unknown key
        is a TypeError naming it."""
        return cls(MicrowaveConfig(**description))

    def _set_dipoles(self, d: Dipoles) -> None:
        self.positions = d.positions
        self.kinds = d.kinds
        self.n_fixed = d.n_fixed
        self.chi = d.chi
        self.gamma = d.gamma
        self.res_fixed = d.res_fixed
        self.ms_spread = d.ms_spread
        self.ms_states = d.ms_states

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``fn`` to the dipoles (positions, couplings, resonances), the frequency grid
        and the eliminated fixed part; the per-dtype copies are dropped."""
        for name in ("frequencies_ghz", "nu", "positions", "chi", "gamma", "res_fixed",
                     "ms_spread", "ms_states", "_g", "_h0", "_u", "_s0", "_load"):
            setattr(self, name, fn(getattr(self, name)))
        if self._flipped is not None:
            self._flipped = fn(self._flipped)
        if self.perturbed:
            pos, res, spread = self._pristine
            self._pristine = (fn(pos), fn(res), fn(spread))
        self._cache.clear()

    # -- perturbation hooks (see physnn.core.perturbation) ----------------------------
    def _perturb_reset(self) -> None:
        self.positions = self._pristine[0].clone()
        self._flipped = None

    def _perturb_sudden(self, event: Sudden, gen: torch.Generator) -> str:
        cfg = self.config
        if event.action == "flip":
            k = max(0, min(int(event.params["count"]), self.n_ms))
            idx = torch.randperm(self.n_ms, generator=gen)[:k]
            flip = torch.zeros(self.n_ms, dtype=torch.bool) if self._flipped is None else self._flipped
            flip = flip.clone()
            flip[idx] = ~flip[idx]
            self._flipped = flip
            return f"flipped metasurface elements {sorted(idx.tolist())}"
        first = self.n_ant + self.kinds.count("wall")
        scat = list(range(first, first + cfg.n_scatterers))
        order = torch.randperm(len(scat), generator=gen).tolist() if scat else []
        r_in = cfg.cavity_radius * (1 - cfg.deformation) - max(cfg.ms_offset, cfg.wall_jitter) - 0.3
        dist = float(event.params["distance"])
        done = []
        for j in order[: int(event.params["count"])]:
            i = scat[j]
            for _ in range(200):
                ang = 2 * math.pi * float(torch.rand((), generator=gen, dtype=torch.float64))
                step = torch.tensor([math.cos(ang), math.sin(ang)], dtype=torch.float64)
                new = self.positions[i] + dist * step.to(self.positions.device)
                others = torch.cat([self.positions[:i], self.positions[i + 1 :]])
                if float(new.norm()) <= r_in and float((others - new).norm(dim=-1).min()) >= 0.3:
                    self.positions[i] = new
                    done.append(f"moved scatterer {i - first} by {dist:g} lambda0")
                    break
        return "; ".join(done) or "move: no free place, nothing changed"

    def _perturb_rebuild(self, delta_k: float, coupling: float) -> None:
        scale = 1.0 + coupling * delta_k
        if not scale > 0:
            raise ValueError(f"{self.spec.name}: drift to dT = {delta_k:.4g} K gives resonances <= 0")
        self.res_fixed = self._pristine[1] * scale
        self.ms_spread = self._pristine[2] * scale
        self._precompute()
        self._cache.clear()

    # -- structure ---------------------------------------------------------------------
    # -- structure ---------------------------------------------------------------------
    def inverse_polarizability(self, res: torch.Tensor, idx: slice | torch.Tensor) -> torch.Tensor:
        """``(res^2 - nu^2 - i gamma nu) / chi^2`` for dipoles ``idx`` with resonances ``res``.

        ``res`` is ``[..., n]``; returns ``[..., n_freq, n]`` complex.
        """
        nu = self.nu.to(device=res.device, dtype=res.dtype)[:, None]
        chi2 = self.chi[idx].to(device=res.device, dtype=res.dtype) ** 2
        gam = self.gamma[idx].to(device=res.device, dtype=res.dtype)
        re = (res.unsqueeze(-2) ** 2 - nu**2) / chi2
        return torch.complex(re, (-gam * nu / chi2).expand_as(re))

    def _green(self) -> torch.Tensor:
        """``G[f, i, j]``, the coupling between dipoles, self-terms ``i/4`` (regularised)."""
        d = pair_distances(self.positions)
        kr = 2 * math.pi * self.nu[:, None, None] * d
        eye = torch.eye(len(d), dtype=torch.bool, device=kr.device)
        g = green_2d(torch.where(eye, torch.ones_like(kr), kr)).to(kr.device)
        return torch.where(eye, torch.complex(torch.zeros_like(kr), 0.25 * torch.ones_like(kr)), g)

    def _precompute(self) -> None:
        """Eliminate the fixed dipoles once per frequency (complex128, on the CPU)."""
        nf = self.n_fixed
        g = self._green()
        self._g = g
        w_ff = (
            torch.diag_embed(self.inverse_polarizability(self.res_fixed, slice(0, nf))) - g[:, :nf, :nf]
        )
        g_mf = g[:, nf:, :nf]
        rhs = torch.cat(
            [
                g_mf.transpose(-1, -2),
                torch.eye(nf, self.n_ant, dtype=g.dtype, device=g.device).expand(len(g), nf, self.n_ant),
            ],
            dim=-1,
        )
        sol = torch.linalg.solve(w_ff, rhs)
        x_fm, a = sol[..., : self.n_ms], sol[..., self.n_ms :]
        self._h0 = a[:, : self.n_ant, :]  # [f, antenna, antenna] = [W_FF^-1] among antennas
        self._u = -g_mf @ a  # [f, M, antenna]
        self._s0 = -g[:, nf:, nf:] - g_mf @ x_fm  # [f, M, M]
        # load conductance of the antennas' ports: d = gamma nu / chi^2
        self._load = self.gamma[: self.n_ant] * self.nu[:, None] / self.chi[: self.n_ant] ** 2

    def _tensors(self, device: torch.device, cdtype: torch.dtype) -> dict[str, torch.Tensor]:
        key = (str(device), cdtype)
        if key not in self._cache:
            rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
            fixed = {"s0": self._s0, "u": self._u, "h0": self._h0}
            if self.config.solver == "flips":
                fixed.update(self._references())
            self._cache[key] = {k: v.to(device, cdtype) for k, v in fixed.items()}
            self._cache[key]["norm"] = (
                2 * (self._load[:, :, None] * self._load[:, None, :]).sqrt()
            ).to(device, rdtype)
        return self._cache[key]

    def _references(self) -> dict[str, torch.Tensor]:
        """What ``solver = "flips"`` needs of its two reference states (all elements off, all
        on), stacked ``[2, ...]`` and in complex128: the inverse ``R^-1`` of the metasurface
        system, ``R^-1 u`` and ``R^-T u``, the transfer ``c = h0 + u^T R^-1 u`` and the inverse
        change ``1 / (d_other - d_ref)`` of each element's inverse polarisability."""
        states = self.ms_states.to(self._s0.device, torch.float64)
        spread = self.ms_spread.to(self._s0.device, torch.float64)
        ms = slice(self.n_fixed, None)
        d = [self.inverse_polarizability(s * spread, ms) for s in states[:2]]  # [f, M] each
        rinv = torch.linalg.inv(torch.stack([self._s0 + torch.diag_embed(di) for di in d]))
        w = rinv @ self._u
        return {
            "rinv": rinv,
            "w": w,
            "v": rinv.transpose(-1, -2) @ self._u,
            "c": self._h0 + self._u.transpose(-1, -2) @ w,
            "dinv": torch.stack([1 / (d[1] - d[0]), 1 / (d[0] - d[1])]),
        }

    # -- the metasurface ---------------------------------------------------------------
    def element_bits(self, x: torch.Tensor) -> torch.Tensor:
        """States of the 1-bit elements (``elements_per_feature = 2``) for inputs ``x``
        ``[B, n_in]`` -> ``[B, M]`` in ``x``'s dtype: 1 where an element sits at ``ms_states[1]``
        (a flipped element's bit is inverted). Zero gradient: levels -> bits is piecewise constant."""
        lv = torch.round(x)
        hi = torch.floor(lv / 2)
        bits = torch.stack([hi, lv - 2 * hi], dim=-1).flatten(1)  # [B, 2 n_in]: hi, lo
        if self._flipped is not None:  # an inverted element: on and off trade places
            bits = torch.where(self._flipped.to(x.device), 1 - bits, bits)
        return bits

    def element_resonances(self, x: torch.Tensor) -> torch.Tensor:
        """Resonance ``nu`` of every metasurface element for inputs ``x`` ``[B, n_in]`` -> ``[B, M]``."""
        states = self.ms_states.to(device=x.device, dtype=x.dtype)
        spread = self.ms_spread.to(device=x.device, dtype=x.dtype)
        if self.config.elements_per_feature == 2:
            res = states[0] + (states[1] - states[0]) * self.element_bits(x)
        else:  # piecewise-linear interpolation between the 4 states: a continuous relaxation
            i = torch.floor(x).clamp(0, 2)
            t = x - i
            i = i.long()
            res = states[i] * (1 - t) + states[i + 1] * t
            if self._flipped is not None:
                rev = states.flip(0)
                flipped = self._flipped.to(x.device)
                res = torch.where(flipped, rev[i] * (1 - t) + rev[i + 1] * t, res)
        return res * spread

    def transfer(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Complex transmission ``s[b, rx, tx, f]`` (``|s| <= 1``), the fast Schur path
        (``config.solver``: one dense solve per sample, or the flipped elements' update).

        ``reverse=True`` drives the receivers and probes the transmitters, returning
        ``s[b, tx, rx, f]`` (equal to the forward one transposed, by reciprocity).
        """
        cfg = self.config
        if x.dtype != torch.float64:  # single precision (complex64) for float32/16 inputs
            x = x.float()
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        t = self._tensors(x.device, cdtype)
        tx = slice(0, cfg.n_tx)
        rx = slice(cfg.n_tx, self.n_ant)
        src, rcv = (rx, tx) if reverse else (tx, rx)
        norm = t["norm"][:, rcv, src]
        if cfg.solver == "flips":
            bits = self.element_bits(x)
            m = bits.shape[1]
            n_flips = torch.minimum(bits.sum(1), m - bits.sum(1))
            perm = torch.argsort(n_flips, stable=True)  # chunks of alike k: less padding
            out = [self._solve_flips(bits[perm[b0 : b0 + cfg.chunk]], t, src, rcv)
                   for b0 in range(0, x.shape[0], cfg.chunk)]
            s = out[0].new_empty((x.shape[0], *out[0].shape[1:]))
            s[perm] = torch.cat(out)
            s = s * norm
            if x.requires_grad and torch.is_grad_enabled():  # keep the (exactly zero) gradient
                s = s + (0 * bits.sum(1))[:, None, None, None]
            return s.permute(0, 2, 3, 1)
        u_src, u_rcv = t["u"][..., src], t["u"][..., rcv]
        h0 = t["h0"][:, rcv, src]
        inv = self.inverse_polarizability(self.element_resonances(x), slice(self.n_fixed, None))
        out = []
        for b0 in range(0, x.shape[0], cfg.chunk):
            inv_b = inv[b0 : b0 + cfg.chunk].to(cdtype)
            s = t["s0"].expand(inv_b.shape[0], *t["s0"].shape).clone()
            s.diagonal(dim1=-2, dim2=-1).add_(inv_b)
            sol = torch.linalg.solve(s, u_src.expand(inv_b.shape[0], *u_src.shape))
            h = h0 + u_rcv.transpose(-1, -2) @ sol  # [b, f, rcv, src]
            out.append(h * norm)
        return torch.cat(out).permute(0, 2, 3, 1)

    def _solve_flips(self, bits: torch.Tensor, t: dict[str, torch.Tensor], src: slice,
                     rcv: slice) -> torch.Tensor:
        """``h[b, f, rcv, src]`` by Woodbury: ``S = R + P D P^T`` with ``R`` the nearer
        reference state (all off or all on), ``P`` its ``k`` flipped elements and ``D`` their
        change of inverse polarisability, so ``u^T S^-1 u = u^T R^-1 u - (P^T R^-T u)^T K^-1
        (P^T R^-1 u)`` with ``K = D^-1 + P^T R^-1 P``: a ``k x k`` solve, ``k <= M / 2``.

        A sample with fewer flips than the batch's ``k`` fills its other slots with unflipped
        elements given a vanishing change (``D^-1`` = 1e15, 1e100 in complex128): each adds
        a decoupled row whose ``z`` is ~1e-15 of the others, below the dtype's rounding."""
        ref = (2 * bits.sum(1) > bits.shape[1]).long()  # [b]: 1 where all-on is nearer
        flip = bits != ref[:, None].to(bits.dtype)
        c = t["c"][ref][:, :, rcv, src]  # [b, f, rcv, src]
        k = int(flip.sum(1).max())
        if k == 0:
            return c
        n, nf, m = len(bits), self.n_freq, self.n_ms
        order = torch.argsort((~flip).to(torch.uint8), dim=1, stable=True)[:, :k]  # flips first
        idx = order[:, None, :]  # [b, 1, k]
        f = torch.arange(nf, device=bits.device)[None, :, None]
        rows = ((ref[:, None, None] * nf + f) * m + idx).reshape(-1)  # [b f k] into [2 f M]
        kk = t["rinv"].reshape(-1, m).index_select(0, rows).view(n, nf, k, m)
        kk = torch.gather(kk, 3, idx[:, :, None, :].expand(n, nf, k, k))
        big = 1e100 if kk.dtype == torch.complex128 else 1e15
        dinv = t["dinv"].reshape(-1).index_select(0, rows).view(n, nf, k)
        kk.diagonal(dim1=-2, dim2=-1).add_(torch.where(torch.gather(flip, 1, order)[:, None, :],
                                                       dinv, torch.full_like(dinv, big)))
        w = t["w"].reshape(-1, self.n_ant).index_select(0, rows).view(n, nf, k, -1)
        v = t["v"].reshape(-1, self.n_ant).index_select(0, rows).view(n, nf, k, -1)
        z = torch.linalg.solve(kk, w[..., src])
        return c - v[..., rcv].transpose(-1, -2) @ z

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gain * self.transfer(x).abs().flatten(1).to(x.dtype)
        return apply_effects(y, self.noise, self.generator(y.device))

    # -- reference solve and diagnostics -----------------------------------------------
    def dipole_moments(self, x: torch.Tensor, source: int = 0) -> torch.Tensor:
        """All dipole moments ``p[b, f, i]`` for a unit drive on antenna ``source`` (index
        among tx then rx), from the full dense ``N x N`` solve (slow; a reference)."""
        x = x.detach().to(self._g.device, torch.float64)
        inv = torch.cat(
            [
                self.inverse_polarizability(self.res_fixed, slice(0, self.n_fixed)).expand(
                    x.shape[0], self.n_freq, self.n_fixed
                ),
                self.inverse_polarizability(self.element_resonances(x), slice(self.n_fixed, None)),
            ],
            dim=-1,
        )
        w = torch.diag_embed(inv) - self._g
        e = torch.zeros(len(self.positions), 1, dtype=w.dtype, device=w.device)
        e[source] = 1
        return torch.linalg.solve(w, e.expand(*w.shape[:-1], 1)).squeeze(-1)

    def power_balance(self, x: torch.Tensor, source: int = 0) -> dict[str, torch.Tensor]:
        """Power supplied ``Im p_source``, absorbed ``sum d_i |p_i|^2`` and radiated
        ``p^H (J0/4) p`` (each ``[B, n_freq]``) from the dense solve: supplied = absorbed +
        radiated, and both are >= 0 for a passive cavity."""
        p = self.dipole_moments(x, source)
        load = self.gamma * self.nu[:, None] / self.chi**2  # [f, N]
        absorbed = (load * p.abs().square()).sum(-1)
        kr = 2 * math.pi * self.nu[:, None, None] * pair_distances(self.positions)
        j = torch.complex(radiation_kernel(kr).to(kr.device), torch.zeros_like(kr))
        radiated = (p.conj().unsqueeze(-2) @ j @ p.unsqueeze(-1)).squeeze(-1).squeeze(-1).real
        return {"supplied": p[..., source].imag, "absorbed": absorbed, "radiated": radiated}

    # -- pictures ----------------------------------------------------------------------
    def plot(self, fig: Any, x: torch.Tensor) -> bool:
        """Cavity geometry and |transfer function| spectra for a few inputs."""
        ax_g, ax_s = fig.subplots(1, 2)
        self.plot_geometry(ax_g)
        self.plot_spectra(ax_s, x[:4])
        return True

    def plot_spectra(self, ax: Any, x: torch.Tensor | None = None, n: int = 4) -> Any:
        """Draw the output ``gain |s(f)|`` (first link) against frequency on a matplotlib Axes.

        ``x``: configurations ``[B, n_in]`` (default: all off, all on, and ``n - 2`` seeded
        random ones). Noise-free. Returns ``ax``.
        """
        if x is None:
            g = torch.Generator().manual_seed(self.seed + 7)
            rand = torch.randint(0, 4, (max(n - 2, 0), self.config.n_in), generator=g)
            x = torch.cat(
                [
                    torch.zeros(1, self.config.n_in),
                    torch.full((1, self.config.n_in), 3.0),
                    rand.to(torch.float64),
                ]
            )[:n]
            labels = ["all 0", "all 3"] + [f"random {i}" for i in range(len(x) - 2)]
        else:
            labels = [f"input {i}" for i in range(len(x))]
        x = self.validate(x.to(torch.float64))
        with torch.no_grad():
            y = self.gain * self.transfer(x)[:, 0, 0].abs()
        f = self.frequencies_ghz.cpu().numpy()
        for yi, lab in zip(y.cpu().numpy(), labels, strict=True):
            ax.plot(f, yi, marker=".", label=lab)
        ax.set(
            xlabel="frequency (GHz)",
            ylabel=r"gain $\times$ |S21|",
            title=f"{self.spec.name}: {len(x)} metasurface configurations",
        )
        ax.legend(fontsize="small")
        return ax

    def plot_geometry(self, ax: Any) -> Any:
        """Draw the dipoles (walls, scatterers, metasurface, antennas) on a matplotlib Axes."""
        pos = self.positions.cpu().numpy()
        style = {
            "wall": ("k", "."),
            "scatterer": ("tab:gray", "o"),
            "metasurface": ("tab:orange", "s"),
            "tx": ("tab:red", "^"),
            "rx": ("tab:blue", "v"),
        }
        for kind, (color, marker) in style.items():
            sel = [i for i, k in enumerate(self.kinds) if k == kind]
            if sel:
                ax.scatter(pos[sel, 0], pos[sel, 1], c=color, marker=marker, s=14, label=kind)
        ax.set(aspect="equal", xlabel=r"x ($\lambda_0$)", ylabel=r"y ($\lambda_0$)")
        ax.legend(fontsize="small")
        return ax

    def _reference_gain(self) -> float:
        g = torch.Generator().manual_seed(self.seed + 1)
        x = torch.randint(0, 4, (64, self.config.n_in), generator=g).to(torch.float64)
        with torch.no_grad():
            return 1.0 / float(self.transfer(x).abs().mean())

    def describe(self) -> dict[str, Any]:
        """The resolved description (defaults filled in); it rebuilds this very cavity."""
        d = asdict(self.config)
        d["ms_states"] = list(d["ms_states"])
        d["perturbations"] = self.describe_perturbations()
        if not d["perturbations"]:
            del d["perturbations"]
        return {"kind": "sim:microwave", **d}
