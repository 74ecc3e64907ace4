"""The fast path's time loop as one C function per query (CPU, no autograd).

Each sample's whole run is one pass of loops: per step the membranes (fixed Newton steps,
from ``p^n``), then one in-place sweep of the grid that updates ``div = D w`` and ``p``
together (three row buffers keep the old ``q = p + kappa div`` of the rows around the one
being written), then the sources and the microphone sums. A sample's grid stays in the
caches across its steps; a large grid is streamed once per step (16 bytes per cell update
plus the loss factors of the few lossy cells, kept as a sparse list per row). Face
coefficients are all ``courant^2`` or 0, so they are a byte of flags per cell. Arithmetic
follows ``fast.chunk`` operation by operation (no contraction into FMAs): on the presets
both give bit-identical results (tested).

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

/* q of one row: v = s + k t (k = kappa forward; lossy cells: v = t + b s in the adjoint) */
static void qrow_SUF(int wp, REAL k, const REAL *restrict s, const REAL *restrict t,
                     REAL *restrict v) {
  for (int c = 0; c < wp; c++) v[c] = s[c] + k * t[c];
}

/* the 5-point operator D C G on one row of q: o[c] = (L q)[c] (o may be NULL: adds to d) */
static void stencil_SUF(int wp, REAL c2, const uint8_t *restrict F, const REAL *restrict qp,
                        const REAL *restrict qc, const REAL *restrict qn, REAL *restrict P,
                        REAL *restrict D) {
  for (int c = 1; c < wp - 1; c++) {
    int f = F[c];
    REAL q0 = qc[c];
    REAL cs = c2 * (REAL)(f & 1), cn = c2 * (REAL)((f >> 1) & 1);
    REAL ce = c2 * (REAL)((f >> 2) & 1), cw = c2 * (REAL)((f >> 3) & 1);
    REAL d = D[c] + cs * (qn[c] - q0) - cn * (q0 - qp[c]) + ce * (qc[c + 1] - q0)
             - cw * (q0 - qc[c - 1]);
    D[c] = d;
    P[c] = P[c] + d;
  }
}

/* adjoint row: with r = lam_d + b lam_p: lam_p = a lam_p + L r, lam_d = r + kappa L r */
static void astencil_SUF(int wp, REAL c2, REAL kappa, const uint8_t *restrict F,
                         const REAL *restrict rp, const REAL *restrict rc,
                         const REAL *restrict rn, REAL *restrict P, REAL *restrict D) {
  for (int c = 1; c < wp - 1; c++) {
    int f = F[c];
    REAL r0 = rc[c];
    REAL cs = c2 * (REAL)(f & 1), cn = c2 * (REAL)((f >> 1) & 1);
    REAL ce = c2 * (REAL)((f >> 2) & 1), cw = c2 * (REAL)((f >> 3) & 1);
    REAL l = cs * (rn[c] - r0) - cn * (r0 - rp[c]) + ce * (rc[c + 1] - r0) - cw * (r0 - rc[c - 1]);
    P[c] = P[c] + l;
    D[c] = r0 + kappa * l;
  }
}

/* x^{n+1} of every membrane (fixed Newton steps); returns the largest last step */
static REAL membranes_SUF(const Geo *g, const Tab_SUF *t, REAL *restrict X, REAL *restrict U,
                          const REAL *restrict P, REAL *restrict w) {
  int n = g->n_mem;
  REAL *a0 = w, *a1 = w + n, *a2 = w + 2 * n, *z = w + 3 * n, *st = w + 4 * n;
  REAL smax = 0;
  for (int m = 0; m < n; m++) {
    REAL tg = t->w2[m] * (P[g->mem_idx[m]] / (REAL)g->p_ref);
    REAL xv = X[m], u = U[m];
    if (g->linear) {
      z[m] = xv + (u * t->lin_num[m] + tg - t->w2[m] * xv) * t->lin_den[m];
    } else {
      REAL b = xv - u;
      a2[m] = t->c2[m] + t->a3[m] * b;
      a1[m] = t->c1[m] + t->c2[m] * b + t->a3[m] * (b * b);
      a0[m] = b * (t->c0[m] + b * a2[m]) - 2 * u - tg;
      z[m] = xv + u;
    }
  }
  if (!g->linear) {
    for (int it = 0; it < g->newton; it++)
      for (int m = 0; m < n; m++) {
        REAL zz = z[m];
        REAL res = a0[m] + zz * (a1[m] + zz * (a2[m] + t->a3[m] * zz));
        REAL slope = a1[m] + zz * (2 * a2[m] + t->a3x3[m] * zz);
        st[m] = res / slope;
        z[m] = zz - st[m];
      }
    for (int m = 0; m < n; m++) { REAL as = fabs(st[m]); if (!(as <= smax)) smax = as; }
  }
  for (int m = 0; m < n; m++) { REAL xv = X[m]; X[m] = z[m]; U[m] = z[m] - xv; }
  return smax;
}

/* the grid pass of one step: div += D C G (p + kappa div), p = a p + b div, in place */
static void field_SUF(const Geo *g, const Tab_SUF *t, REAL *P, REAL *D, REAL *buf, int adj) {
  int wp = g->wp, h = g->h;
  REAL *zero = buf, *rows[3] = {buf + wp, buf + 2 * wp, buf + 3 * wp}, *old = buf + 4 * wp;
  REAL k = adj ? 1 : (REAL)g->kappa;
  REAL *qp = zero, *qc = rows[0], *qn;
  int nxt = 1;
  /* forward: q = p + kappa d; adjoint: r = lam_d + b lam_p */
#define QROW(R, V)                                                                   \
  do {                                                                               \
    const REAL *Pr_ = P + (size_t)(R) * wp, *Dr_ = D + (size_t)(R) * wp;              \
    if (adj) qrow_SUF(wp, 1, Dr_, Pr_, V); else qrow_SUF(wp, k, Pr_, Dr_, V);         \
    if (adj && !g->lossless)                                                         \
      for (int64_t l = g->loss_ptr[R]; l < g->loss_ptr[(R) + 1]; l++) {              \
        int64_t c_ = g->loss_col[l];                                                 \
        V[c_] = Dr_[c_] + t->loss_b[l] * Pr_[c_];                                    \
      }                                                                              \
  } while (0)
  QROW(0, qc);
  for (int r = 0; r < h; r++) {
    REAL *Pr = P + (size_t)r * wp, *Dr = D + (size_t)r * wp;
    if (r + 1 < h) { qn = rows[nxt]; nxt = (nxt + 1) % 3; QROW(r + 1, qn); }
    else qn = zero;
    const uint8_t *F = g->flags + (size_t)r * wp;
    int64_t l0 = g->lossless ? 0 : g->loss_ptr[r], l1 = g->lossless ? 0 : g->loss_ptr[r + 1];
    for (int64_t l = l0; l < l1; l++) old[l - l0] = Pr[g->loss_col[l]];
    if (adj) astencil_SUF(wp, g->c2, g->kappa, F, qp, qc, qn, Pr, Dr);
    else stencil_SUF(wp, g->c2, F, qp, qc, qn, Pr, Dr);
    for (int64_t l = l0; l < l1; l++) {
      int64_t c = g->loss_col[l];
      if (adj) Pr[c] = t->loss_a[l] * old[l - l0] + (Pr[c] - old[l - l0]);
      else Pr[c] = t->loss_a[l] * old[l - l0] + t->loss_b[l] * Dr[c];
    }
    qp = qc; qc = qn;
  }
#undef QROW
}

static int drive_row_SUF(const Geo *g, int step) {
  return step < g->ramp ? step : g->ramp + step % g->n_w;
}

/* the whole run, sample by sample; xtraj (optional) records b^start, x^start .. x^stop */
void fwd_SUF(const Geo *g, const Tab_SUF *t, REAL *p, REAL *div, REAL *xm, REAL *um,
             REAL *acc, REAL *worst, const REAL *src, REAL *xtraj) {
  int wp = g->wp, nm = g->h * wp, n_mem = g->n_mem, n_acc = g->n_acc, n_mic = g->n_mic;
  int steps = g->stop - g->start;
  REAL *buf = (REAL *)calloc((size_t)(6 * wp + 5 * n_mem + g->n_mc + n_mic + 8), sizeof(REAL));
  if (!buf) return;
  REAL *mw = buf + 6 * wp, *pmc = mw + 5 * n_mem, *pmic = pmc + g->n_mc;
  FTZ_ON
  for (int s = 0; s < g->B; s++) {
    REAL *P = p + (size_t)s * nm, *D = div + (size_t)s * nm;
    REAL *X = xm + (size_t)s * n_mem, *U = um + (size_t)s * n_mem;
    REAL *A = acc + (size_t)s * n_mic * n_acc;
    const REAL *S = src ? src + (size_t)s * g->n_rows * g->n_spk : 0;
    REAL *XT = xtraj ? xtraj + (size_t)s * (steps + 2) * n_mem : 0;
    if (XT) for (int m = 0; m < n_mem; m++) { XT[m] = X[m] - U[m]; XT[n_mem + m] = X[m]; }
    REAL wst = worst[s];
    for (int step = g->start; step < g->stop; step++) {
      if (n_mem) {
        REAL xmax = 0;
        for (int m = 0; m < n_mem; m++) { REAL ax = fabs(X[m]); if (ax > xmax) xmax = ax; }
        REAL smax = membranes_SUF(g, t, X, U, P, mw);
        if (!g->linear) {
          REAL r = smax / ((REAL)g->tol * (1 + xmax));
          if (!(r <= wst)) wst = r;
        }
        if (XT) for (int m = 0; m < n_mem; m++) XT[(size_t)(step - g->start + 2) * n_mem + m] = X[m];
      }
      field_SUF(g, t, P, D, buf, 0);
      if (S) {
        const REAL *sr = S + (size_t)drive_row_SUF(g, step) * g->n_spk;
        for (int c = 0; c < g->n_spk; c++) P[g->spk_idx[c]] += sr[c];
      }
      for (int m = 0; m < n_mem; m++) P[g->mem_idx[m]] += U[m] * t->mem_src[m];
      int k = step + 1 - g->t0;
      if (g->read && k >= 0 && k < g->n_w) {
        const REAL *bk = t->basis + (size_t)k * n_mic * n_acc;
        for (int j = 0; j < g->n_mc; j++) pmc[j] = P[g->mic_idx[j]];
        for (int mm = 0; mm < n_mic; mm++) {
          REAL v = 0;
          if (g->mic_single) v = pmc[mm];
          else for (int j = 0; j < g->n_mc; j++) v += pmc[j] * t->mic_w[(size_t)j * n_mic + mm];
          pmic[mm] = v;
        }
        for (int mm = 0; mm < n_mic; mm++)
          for (int j = 0; j < n_acc; j++)
            A[mm * n_acc + j] = A[mm * n_acc + j] + pmic[mm] * bk[mm * n_acc + j];
      }
    }
    worst[s] = wst;
  }
  FTZ_OFF
  free(buf);
}

/* the adjoint run, backwards in time: lam_p, lam_d, lam_x, lam_u in place; gacc the
   gradient of the sums; lam_src [B, rows, speaker cells] accumulates the drive's gradient */
void bwd_SUF(const Geo *g, const Tab_SUF *t, REAL *lp, REAL *ld, REAL *lx, REAL *lu,
             const REAL *gacc, REAL *lam_src, const REAL *xtraj) {
  int wp = g->wp, nm = g->h * wp, n_mem = g->n_mem, n_acc = g->n_acc, n_mic = g->n_mic;
  int steps = g->stop - g->start;
  REAL *buf = (REAL *)calloc((size_t)(6 * wp + 2 * n_mem + n_mic + 8), sizeof(REAL));
  if (!buf) return;
  REAL *lt = buf + 6 * wp, *gm = lt + n_mem;
  FTZ_ON
  for (int s = 0; s < g->B; s++) {
    REAL *P = lp + (size_t)s * nm, *D = ld + (size_t)s * nm;
    REAL *LX = lx + (size_t)s * n_mem, *LU = lu + (size_t)s * n_mem;
    const REAL *G = gacc + (size_t)s * n_mic * n_acc;
    REAL *LS = lam_src ? lam_src + (size_t)s * g->n_rows * g->n_spk : 0;
    const REAL *XT = xtraj + (size_t)s * (steps + 2) * n_mem;
    for (int step = g->stop - 1; step >= g->start; step--) {
      int k = step + 1 - g->t0;
      if (g->read && k >= 0 && k < g->n_w) {
        const REAL *bk = t->basis + (size_t)k * n_mic * n_acc;
        for (int mm = 0; mm < n_mic; mm++) {
          REAL v = 0;
          for (int j = 0; j < n_acc; j++) v += G[mm * n_acc + j] * bk[mm * n_acc + j];
          gm[mm] = v;
        }
        for (int j = 0; j < g->n_mc; j++) {
          if (g->mic_single) { P[g->mic_idx[j]] += gm[j]; continue; }
          REAL v = 0;
          for (int mm = 0; mm < n_mic; mm++) v += t->mic_w[(size_t)j * n_mic + mm] * gm[mm];
          P[g->mic_idx[j]] += v;
        }
      }
      if (LS) {
        REAL *sr = LS + (size_t)drive_row_SUF(g, step) * g->n_spk;
        for (int c = 0; c < g->n_spk; c++) sr[c] += P[g->spk_idx[c]];
      }
      for (int m = 0; m < n_mem; m++) LU[m] += P[g->mem_idx[m]] * t->mem_src[m];
      /* membranes: z = x^{n+1} solves R(z; b = x^{n-1}, u, t) = 0 */
      const REAL *xb = XT + (size_t)(step - g->start) * n_mem;
      for (int m = 0; m < n_mem; m++) {
        REAL b = xb[m], xv = xb[n_mem + m], z = xb[2 * n_mem + m], u = xv - b;
        REAL lz = LX[m] + LU[m], dzx, dzu, dzt;
        (void)u;
        if (g->linear) {
          dzt = t->lin_den[m]; dzx = 1 - t->w2[m] * dzt; dzu = t->lin_num[m] * dzt;
        } else {
          REAL a3 = t->a3[m], a2 = t->c2[m] + a3 * b, a1 = t->c1[m] + t->c2[m] * b + a3 * b * b;
          REAL rz = a1 + z * (2 * a2 + 3 * a3 * z);
          REAL rb = a3 * z * z + (t->c2[m] + 2 * a3 * b) * z + t->c0[m] + 2 * b * a2 + a3 * b * b;
          dzt = 1 / rz; dzx = -rb * dzt; dzu = -dzx + 2 * dzt;
        }
        LX[m] = -LU[m] + lz * dzx;
        LU[m] = lz * dzu;
        lt[m] = lz * dzt;
      }
      field_SUF(g, t, P, D, buf, 1);
      for (int m = 0; m < n_mem; m++) P[g->mem_idx[m]] += lt[m] * t->w2[m] / (REAL)g->p_ref;
    }
  }
  FTZ_OFF
  free(buf);
}
"""


def _source() -> str:
    """The C file: shared header, then the body for float and for double."""
    return _HEAD + "".join(
        _BODY.replace("REAL", real).replace("_SUF", suffix)
        for real, suffix in (("float", "_f32"), ("double", "_f64"))
    )


_SRC = _source()


_LIB: Any = None
_TRIED = False


def _build() -> Any:
    """Compile ``_SRC`` (once per source version) and load it; ``None`` if that fails."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    tag = hashlib.sha256(_SRC.encode()).hexdigest()[:16]
    root = Path(os.environ.get("PHYSNN_CACHE", Path.home() / ".cache" / "physnn"))
    so = root / f"acoustic_{tag}.so"
    if not so.exists():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            c_file, out = Path(tmp) / "acoustic.c", Path(tmp) / "acoustic.so"
            c_file.write_text(_SRC)
            cmd = [cc, "-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared",
                   "-fPIC", str(c_file), "-o", str(out), "-lm"]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
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


def call(name: str, dtype: torch.dtype, geo: Geo, tab: Tab, *arrays: torch.Tensor | None) -> None:
    """Call ``fwd`` or ``bwd`` of ``dtype`` with the structs and the tensors' addresses."""
    suffix = "_f32" if dtype == torch.float32 else "_f64"
    for a in arrays:
        assert a is None or a.dtype == dtype, (name, a.dtype, dtype)
    fn = getattr(_LIB, name + suffix)
    fn(ctypes.byref(geo), ctypes.byref(tab), *(ctypes.c_void_p(ptr(a)) for a in arrays))
