"""The fast path's time loop as one C function per query (CPU), and its adjoint.

Small grids (``fast.GROUPED_CELLS``) run ``LANES`` samples in lockstep, the sample the
fastest index (one vector instruction serves 16 float32 samples); larger grids one sample
at a time, vectorised along the rows. The samples are split over
``torch.get_num_threads()`` threads. Per step: the membranes (fixed Newton steps, from
``p^n``), one in-place sweep of the grid that updates ``div = D w`` and ``p`` together
(three row buffers keep the old ``q = p + kappa div`` of the rows around the one being
written), the sources, the microphone sums. A small grid stays in the caches across its
steps; a large one is streamed once per step (16 bytes per cell update, plus the loss
factors of the few lossy cells, a sparse list per row). Face coefficients are all
``courant^2`` or 0: a byte of flags per cell. Arithmetic follows ``fast.chunk`` operation
by operation (no contraction into FMAs): both give bit-identical results (tested).

``bwd`` is the adjoint scheme, run backwards in time: the field's update is linear and its
operator symmetric, so only the membranes' trajectory is stored by the forward pass, and the
membranes' Newton solve is differentiated implicitly (``dz = -dR / R'(z)``).

Built with the system C compiler on first use (about a second) into a per-user cache
directory (``PHYSNN_CACHE``, default ``~/.cache/physnn``); ``available()`` is False when
there is no compiler or the build fails, and the callers fall back to ``fast.chunk``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

_HEAD = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#define FTZ_ON unsigned int csr_ = _mm_getcsr(); _mm_setcsr(csr_ | 0x8040);
#define FTZ_OFF _mm_setcsr(csr_);
#else
#define FTZ_ON
#define FTZ_OFF
#endif
typedef struct {
  int B, h, wp, start, stop, ramp, n_w, t0, lossless, newton, linear, n_spk, n_mem;
  int read, n_mc, mic_single, n_mic, n_acc, n_rows;
  double kappa, c2, p_ref, tol;
  const uint8_t *flags; const int64_t *loss_ptr, *loss_col;
  const int64_t *spk_idx, *mem_idx, *mic_idx;
} Geo;
"""

_BODY = r"""
typedef struct {
  const REAL *loss_a, *loss_b, *w2, *lin_num, *lin_den, *a3, *a3x3, *c2, *c1, *c0, *mem_src;
  const REAL *mic_w, *basis;
} Tab_SUF;

#define L_ LANES

/* q of one row (all lanes): v = s + k t */
static void qrow_SUF(int n, REAL k, const REAL *restrict s, const REAL *restrict t,
                     REAL *restrict v) {
  for (int i = 0; i < n; i++) v[i] = s[i] + k * t[i];
}

/* forward row: d += (D C G q), p = p + d (lossy cells are fixed up by the caller) */
static void stencil_SUF(int wp, REAL c2, const uint8_t *restrict F, const REAL *restrict qp,
                        const REAL *restrict qc, const REAL *restrict qn, REAL *restrict P,
                        REAL *restrict D) {
  for (int c = 1; c < wp - 1; c++) {
    int f = F[c];
    REAL cs = c2 * (REAL)(f & 1), cn = c2 * (REAL)((f >> 1) & 1);
    REAL ce = c2 * (REAL)((f >> 2) & 1), cw = c2 * (REAL)((f >> 3) & 1);
    for (int l = 0; l < L_; l++) {
      int i = c * L_ + l;
      REAL q0 = qc[i];
      REAL d = D[i] + cs * (qn[i] - q0) - cn * (q0 - qp[i]) + ce * (qc[i + L_] - q0)
               - cw * (q0 - qc[i - L_]);
      D[i] = d;
      P[i] = P[i] + d;
    }
  }
}

/* adjoint row, with r = lam_d + b lam_p: lam_p = a lam_p + L r, lam_d = r + kappa L r */
static void astencil_SUF(int wp, REAL c2, REAL kappa, const uint8_t *restrict F,
                         const REAL *restrict rp, const REAL *restrict rc,
                         const REAL *restrict rn, REAL *restrict P, REAL *restrict D) {
  for (int c = 1; c < wp - 1; c++) {
    int f = F[c];
    REAL cs = c2 * (REAL)(f & 1), cn = c2 * (REAL)((f >> 1) & 1);
    REAL ce = c2 * (REAL)((f >> 2) & 1), cw = c2 * (REAL)((f >> 3) & 1);
    for (int l = 0; l < L_; l++) {
      int i = c * L_ + l;
      REAL r0 = rc[i];
      REAL v = cs * (rn[i] - r0) - cn * (r0 - rp[i]) + ce * (rc[i + L_] - r0)
               - cw * (r0 - rc[i - L_]);
      P[i] = P[i] + v;
      D[i] = r0 + kappa * v;
    }
  }
}

/* x^{n+1} of every membrane (fixed Newton steps); smax[l]: the largest last step */
static void membranes_SUF(const Geo *g, const Tab_SUF *t, REAL *restrict X, REAL *restrict U,
                          const REAL *restrict P, REAL *restrict w, REAL *restrict smax) {
  int n = g->n_mem * L_;
  REAL *a0 = w, *a1 = w + n, *a2 = w + 2 * n, *z = w + 3 * n, *st = w + 4 * n;
  for (int m = 0; m < g->n_mem; m++)
    for (int l = 0; l < L_; l++) {
      int i = m * L_ + l;
      REAL tg = t->w2[m] * (P[g->mem_idx[m] * L_ + l] / (REAL)g->p_ref);
      REAL xv = X[i], u = U[i];
      if (g->linear) {
        z[i] = xv + (u * t->lin_num[m] + tg - t->w2[m] * xv) * t->lin_den[m];
      } else {
        REAL b = xv - u;
        a2[i] = t->c2[m] + t->a3[m] * b;
        a1[i] = t->c1[m] + t->c2[m] * b + t->a3[m] * (b * b);
        a0[i] = b * (t->c0[m] + b * a2[i]) - 2 * u - tg;
        z[i] = xv + u;
      }
    }
  for (int l = 0; l < L_; l++) smax[l] = 0;
  if (!g->linear) {
    for (int it = 0; it < g->newton; it++)
      for (int m = 0; m < g->n_mem; m++)
        for (int l = 0; l < L_; l++) {
          int i = m * L_ + l;
          REAL zz = z[i];
          REAL res = a0[i] + zz * (a1[i] + zz * (a2[i] + t->a3[m] * zz));
          REAL slope = a1[i] + zz * (2 * a2[i] + t->a3x3[m] * zz);
          st[i] = res / slope;
          z[i] = zz - st[i];
        }
    for (int m = 0; m < g->n_mem; m++)
      for (int l = 0; l < L_; l++) {
        REAL as = fabs(st[m * L_ + l]);
        if (!(as <= smax[l])) smax[l] = as;
      }
  }
  for (int i = 0; i < n; i++) { REAL xv = X[i]; X[i] = z[i]; U[i] = z[i] - xv; }
}

/* the grid pass of one step, in place, row by row (buf: 5 rows of wp lanes)
   forward: q = p + kappa d, d += D C G q, p = a p + b d
   adjoint: r = lam_d + b lam_p, lam_p = a lam_p + L r, lam_d = r + kappa L r */
static void field_SUF(const Geo *g, const Tab_SUF *t, REAL *P, REAL *D, REAL *buf, int adj) {
  int wp = g->wp, h = g->h, rl = wp * L_;
  REAL *zero = buf, *rows[3] = {buf + rl, buf + 2 * rl, buf + 3 * rl}, *old = buf + 4 * rl;
  REAL *qp = zero, *qc = rows[0], *qn;
  int nxt = 1;
#define QROW(R, V)                                                                   \
  do {                                                                               \
    const REAL *Pr_ = P + (size_t)(R) * rl, *Dr_ = D + (size_t)(R) * rl;              \
    if (adj) qrow_SUF(rl, 1, Dr_, Pr_, V); else qrow_SUF(rl, (REAL)g->kappa, Pr_, Dr_, V); \
    if (adj && !g->lossless)                                                         \
      for (int64_t l_ = g->loss_ptr[R]; l_ < g->loss_ptr[(R) + 1]; l_++)             \
        for (int k_ = 0; k_ < L_; k_++) {                                            \
          int64_t i_ = g->loss_col[l_] * L_ + k_;                                    \
          V[i_] = Dr_[i_] + t->loss_b[l_] * Pr_[i_];                                 \
        }                                                                            \
  } while (0)
  QROW(0, qc);
  for (int r = 0; r < h; r++) {
    REAL *Pr = P + (size_t)r * rl, *Dr = D + (size_t)r * rl;
    if (r + 1 < h) { qn = rows[nxt]; nxt = (nxt + 1) % 3; QROW(r + 1, qn); }
    else qn = zero;
    const uint8_t *F = g->flags + (size_t)r * wp;
    int64_t l0 = g->lossless ? 0 : g->loss_ptr[r], l1 = g->lossless ? 0 : g->loss_ptr[r + 1];
    for (int64_t l = l0; l < l1; l++)
      for (int k = 0; k < L_; k++) old[(l - l0) * L_ + k] = Pr[g->loss_col[l] * L_ + k];
    if (adj) astencil_SUF(wp, g->c2, g->kappa, F, qp, qc, qn, Pr, Dr);
    else stencil_SUF(wp, g->c2, F, qp, qc, qn, Pr, Dr);
    for (int64_t l = l0; l < l1; l++)
      for (int k = 0; k < L_; k++) {
        int64_t i = g->loss_col[l] * L_ + k;
        REAL o = old[(l - l0) * L_ + k];
        if (adj) Pr[i] = t->loss_a[l] * o + (Pr[i] - o);
        else Pr[i] = t->loss_a[l] * o + t->loss_b[l] * Dr[i];
      }
    qp = qc; qc = qn;
  }
#undef QROW
}

static int drive_row_SUF(const Geo *g, int step) {
  return step < g->ramp ? step : g->ramp + step % g->n_w;
}

/* the whole run, one group of L_ samples (lanes, the fastest index) after another;
   xtraj (optional) records b^start, x^start .. x^stop of the membranes */
void fwd_SUF(const Geo *g, const Tab_SUF *t, REAL *p, REAL *div, REAL *xm, REAL *um,
             REAL *acc, REAL *worst, const REAL *src, REAL *xtraj) {
  int wp = g->wp, nm = g->h * wp, n_mem = g->n_mem, n_acc = g->n_acc, n_mic = g->n_mic;
  int steps = g->stop - g->start;
  size_t nb = (size_t)L_ * (5 * wp + 5 * n_mem + g->n_mc + n_mic + 4) + 8;
  REAL *buf = (REAL *)calloc(nb, sizeof(REAL));
  if (!buf) return;
  REAL *mw = buf + 5 * wp * L_, *pmc = mw + 5 * n_mem * L_, *pmic = pmc + g->n_mc * L_;
  REAL *wst = pmic + n_mic * L_, *xmax = wst + L_, *smax = xmax + L_;
  FTZ_ON
  for (int s = 0; s < g->B; s++) {
    REAL *P = p + (size_t)s * nm * L_, *D = div + (size_t)s * nm * L_;
    REAL *X = xm + (size_t)s * n_mem * L_, *U = um + (size_t)s * n_mem * L_;
    REAL *A = acc + (size_t)s * n_mic * n_acc * L_;
    const REAL *S = src ? src + (size_t)s * g->n_rows * g->n_spk * L_ : 0;
    REAL *XT = xtraj ? xtraj + (size_t)s * (steps + 2) * n_mem * L_ : 0;
    if (XT)
      for (int i = 0; i < n_mem * L_; i++) { XT[i] = X[i] - U[i]; XT[n_mem * L_ + i] = X[i]; }
    for (int l = 0; l < L_; l++) wst[l] = worst[s * L_ + l];
    for (int step = g->start; step < g->stop; step++) {
      if (n_mem) {
        for (int l = 0; l < L_; l++) xmax[l] = 0;
        for (int m = 0; m < n_mem; m++)
          for (int l = 0; l < L_; l++) {
            REAL ax = fabs(X[m * L_ + l]);
            if (ax > xmax[l]) xmax[l] = ax;
          }
        membranes_SUF(g, t, X, U, P, mw, smax);
        if (!g->linear)
          for (int l = 0; l < L_; l++) {
            REAL r = smax[l] / ((REAL)g->tol * (1 + xmax[l]));
            if (!(r <= wst[l])) wst[l] = r;
          }
        if (XT)
          for (int i = 0; i < n_mem * L_; i++)
            XT[(size_t)(step - g->start + 2) * n_mem * L_ + i] = X[i];
      }
      field_SUF(g, t, P, D, buf, 0);
      if (S) {
        const REAL *sr = S + (size_t)drive_row_SUF(g, step) * g->n_spk * L_;
        for (int c = 0; c < g->n_spk; c++)
          for (int l = 0; l < L_; l++) P[g->spk_idx[c] * L_ + l] += sr[c * L_ + l];
      }
      for (int m = 0; m < n_mem; m++)
        for (int l = 0; l < L_; l++) P[g->mem_idx[m] * L_ + l] += U[m * L_ + l] * t->mem_src[m];
      int k = step + 1 - g->t0;
      if (g->read && k >= 0 && k < g->n_w) {
        const REAL *bk = t->basis + (size_t)k * n_mic * n_acc;
        for (int j = 0; j < g->n_mc; j++)
          for (int l = 0; l < L_; l++) pmc[j * L_ + l] = P[g->mic_idx[j] * L_ + l];
        for (int mm = 0; mm < n_mic; mm++)
          for (int l = 0; l < L_; l++) {
            REAL v = 0;
            if (g->mic_single) v = pmc[mm * L_ + l];
            else
              for (int j = 0; j < g->n_mc; j++)
                v += pmc[j * L_ + l] * t->mic_w[(size_t)j * n_mic + mm];
            pmic[mm * L_ + l] = v;
          }
        for (int mm = 0; mm < n_mic; mm++)
          for (int j = 0; j < n_acc; j++)
            for (int l = 0; l < L_; l++) {
              int i = (mm * n_acc + j) * L_ + l;
              A[i] = A[i] + pmic[mm * L_ + l] * bk[mm * n_acc + j];
            }
      }
    }
    for (int l = 0; l < L_; l++) worst[s * L_ + l] = wst[l];
  }
  FTZ_OFF
  free(buf);
}

/* the adjoint run, backwards in time, same layout: lam_p, lam_d, lam_x, lam_u in place;
   gacc the gradient of the sums; lam_src [rows, speaker cells] per sample accumulates the
   gradient of the drive */
void bwd_SUF(const Geo *g, const Tab_SUF *t, REAL *lp, REAL *ld, REAL *lx, REAL *lu,
             const REAL *gacc, REAL *lam_src, const REAL *xtraj) {
  int wp = g->wp, nm = g->h * wp, n_mem = g->n_mem, n_acc = g->n_acc, n_mic = g->n_mic;
  int steps = g->stop - g->start;
  REAL *buf = (REAL *)calloc((size_t)L_ * (5 * wp + 2 * n_mem + n_mic) + 8, sizeof(REAL));
  if (!buf) return;
  REAL *lt = buf + 5 * wp * L_, *gm = lt + n_mem * L_;
  FTZ_ON
  for (int s = 0; s < g->B; s++) {
    REAL *P = lp + (size_t)s * nm * L_, *D = ld + (size_t)s * nm * L_;
    REAL *LX = lx + (size_t)s * n_mem * L_, *LU = lu + (size_t)s * n_mem * L_;
    const REAL *G = gacc + (size_t)s * n_mic * n_acc * L_;
    REAL *LS = lam_src ? lam_src + (size_t)s * g->n_rows * g->n_spk * L_ : 0;
    const REAL *XT = xtraj + (size_t)s * (steps + 2) * n_mem * L_;
    for (int step = g->stop - 1; step >= g->start; step--) {
      int k = step + 1 - g->t0;
      if (g->read && k >= 0 && k < g->n_w) {
        const REAL *bk = t->basis + (size_t)k * n_mic * n_acc;
        for (int mm = 0; mm < n_mic; mm++)
          for (int l = 0; l < L_; l++) {
            REAL v = 0;
            for (int j = 0; j < n_acc; j++) v += G[(mm * n_acc + j) * L_ + l] * bk[mm * n_acc + j];
            gm[mm * L_ + l] = v;
          }
        for (int j = 0; j < g->n_mc; j++)
          for (int l = 0; l < L_; l++) {
            REAL v = 0;
            if (g->mic_single) v = gm[j * L_ + l];
            else
              for (int mm = 0; mm < n_mic; mm++)
                v += t->mic_w[(size_t)j * n_mic + mm] * gm[mm * L_ + l];
            P[g->mic_idx[j] * L_ + l] += v;
          }
      }
      if (LS) {
        REAL *sr = LS + (size_t)drive_row_SUF(g, step) * g->n_spk * L_;
        for (int c = 0; c < g->n_spk; c++)
          for (int l = 0; l < L_; l++) sr[c * L_ + l] += P[g->spk_idx[c] * L_ + l];
      }
      for (int m = 0; m < n_mem; m++)
        for (int l = 0; l < L_; l++) LU[m * L_ + l] += P[g->mem_idx[m] * L_ + l] * t->mem_src[m];
      /* membranes: z = x^{n+1} solves R(z; b = x^{n-1}, u, t) = 0 (implicit derivative) */
      const REAL *xb = XT + (size_t)(step - g->start) * n_mem * L_;
      for (int m = 0; m < n_mem; m++)
        for (int l = 0; l < L_; l++) {
          int i = m * L_ + l;
          REAL b = xb[i], z = xb[2 * n_mem * L_ + i];
          REAL lz = LX[i] + LU[i], dzx, dzu, dzt;
          if (g->linear) {
            dzt = t->lin_den[m]; dzx = 1 - t->w2[m] * dzt; dzu = t->lin_num[m] * dzt;
          } else {
            REAL a3 = t->a3[m], a2 = t->c2[m] + a3 * b;
            REAL a1 = t->c1[m] + t->c2[m] * b + a3 * b * b;
            REAL rz = a1 + z * (2 * a2 + 3 * a3 * z);
            REAL rb = a3 * z * z + (t->c2[m] + 2 * a3 * b) * z + t->c0[m] + 2 * b * a2 + a3 * b * b;
            dzt = 1 / rz; dzx = -rb * dzt; dzu = -dzx + 2 * dzt;
          }
          LX[i] = -LU[i] + lz * dzx;
          LU[i] = lz * dzu;
          lt[i] = lz * dzt;
        }
      field_SUF(g, t, P, D, buf, 1);
      for (int m = 0; m < n_mem; m++)
        for (int l = 0; l < L_; l++)
          P[g->mem_idx[m] * L_ + l] += lt[m * L_ + l] * t->w2[m] / (REAL)g->p_ref;
    }
  }
  FTZ_OFF
  free(buf);
}
#undef L_
"""


LANES = {torch.float32: 16, torch.float64: 8}
"""Samples per group of the batched variant: one 512-bit vector of each dtype."""


def _source() -> str:
    """The C file: shared header, then the body for float and double, one sample at a time
    (``_1``: vectorised along the grid rows) and in groups of ``LANES`` samples
    (``_g``: vectorised across the samples, for small grids)."""
    return _HEAD + "".join(
        _BODY.replace("REAL", real).replace("_SUF", f"_{suffix}_{tag}").replace("LANES", lanes)
        for real, suffix, wide in (("float", "f32", "16"), ("double", "f64", "8"))
        for tag, lanes in (("1", "1"), ("g", wide))
    )


_SRC = _source()


_LIB: Any = None
_TRIED = False


def _cpu() -> str:
    """What ``-march=native`` depends on: the machine and its instruction-set flags (a
    cached library built on another CPU could use instructions this one lacks)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return platform.machine() + platform.processor() + flags


def _build() -> Any:
    """Compile ``_SRC`` (once per source version, compiler and CPU) and load it; ``None``
    if there is no compiler."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    tag = hashlib.sha256((_SRC + cc + _cpu()).encode()).hexdigest()[:16]
    root = Path(os.environ.get("PHYSNN_CACHE", Path.home() / ".cache" / "physnn"))
    so = root / f"acoustic_{tag}.so"
    if not so.exists():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            c_file, out = Path(tmp) / "acoustic.c", Path(tmp) / "acoustic.so"
            c_file.write_text(_SRC)
            base = [cc, "-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC",
                    str(c_file), "-o", str(out), "-lm"]
            try:
                subprocess.run(base[:2] + ["-march=native"] + base[2:], check=True,
                               capture_output=True, timeout=120)
            except subprocess.CalledProcessError:  # a compiler without -march=native
                subprocess.run(base, check=True, capture_output=True, timeout=120)
            os.replace(out, so)  # atomic: concurrent builders agree
    return ctypes.CDLL(str(so))


def available() -> bool:
    """True when the C time loop is built (``PHYSNN_COMPILE=0`` switches it off)."""
    global _LIB, _TRIED
    if os.environ.get("PHYSNN_COMPILE", "").strip().lower() in ("0", "false", "off"):
        return False
    if not _TRIED:
        _TRIED = True
        try:
            _LIB = _build()
        except (OSError, subprocess.SubprocessError) as e:
            warnings.warn(f"sim:acoustic: the C time loop did not build ({e}); running on torch",
                          RuntimeWarning, stacklevel=2)
            _LIB = None
    return _LIB is not None


class Geo(ctypes.Structure):
    """The C ``Geo``: sizes, scheme constants and the integer tables."""

    _fields_ = [(k, ctypes.c_int) for k in (
        "B", "h", "wp", "start", "stop", "ramp", "n_w", "t0", "lossless", "newton", "linear",
        "n_spk", "n_mem", "read", "n_mc", "mic_single", "n_mic", "n_acc", "n_rows")] + [
        (k, ctypes.c_double) for k in ("kappa", "c2", "p_ref", "tol")] + [
        (k, ctypes.c_void_p) for k in (
            "flags", "loss_ptr", "loss_col", "spk_idx", "mem_idx", "mic_idx")]


TAB_FIELDS = ("loss_a", "loss_b", "w2", "lin_num", "lin_den", "a3", "a3x3", "c2", "c1", "c0",
              "mem_src", "mic_w", "basis")


class Tab(ctypes.Structure):
    """The C ``Tab``: pointers to the floating-point tables (of the run's dtype)."""

    _fields_ = [(k, ctypes.c_void_p) for k in TAB_FIELDS]


def ptr(t: torch.Tensor | None) -> int | None:
    """Address of a contiguous CPU tensor (``None``: a null pointer)."""
    if t is None:
        return None
    assert t.is_contiguous() and t.device.type == "cpu"
    return int(t.data_ptr())


def call(
    name: str, dtype: torch.dtype, grouped: bool, geo: Geo, tab: Tab, *arrays: torch.Tensor | None
) -> None:
    """Call ``fwd`` or ``bwd`` of ``dtype`` (``grouped``: the ``LANES`` variant, arrays in
    ``[group, ..., lane]`` layout) with the structs and the tensors' addresses."""
    suffix = ("_f32" if dtype == torch.float32 else "_f64") + ("_g" if grouped else "_1")
    for a in arrays:
        assert a is None or a.dtype == dtype, (name, a.dtype, dtype)
    fn = getattr(_LIB, name + suffix)
    fn(ctypes.byref(geo), ctypes.byref(tab), *(ctypes.c_void_p(ptr(a)) for a in arrays))
