"""Digital reference models on the same split, so a reader sees what the physics adds.

The reference is multinomial logistic regression, sklearn's ``LogisticRegression()``
objective (``C = 1``): the sum of per-sample log-losses plus ``0.5 * ||W||^2 / C``, the
intercept unpenalised. It is fitted in torch on the run's torch device (full-batch L-BFGS
with a strong-Wolfe line search, sklearn's stopping rule: max |gradient| of the mean
objective <= 1e-4, at most 2000 iterations), because sklearn's CPU fit takes minutes on
60,000 images before the first epoch. ``solver="sklearn"`` still gives sklearn's own figure.

Fits are cached in the process by a hash of the arrays: seeds (and the rules of a
``compare``) that share a split share one fit.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch
import torch.nn.functional as F

MAX_ITER = 2000
TOL = 1e-4
_CACHE: dict[tuple[str, str, str], float] = {}


def _digest(*arrays: np.ndarray) -> str:
    """A hash of the arrays' values, shapes and dtypes (what decides the fit)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float = 1.0,
    max_iter: int = MAX_ITER, tol: float = TOL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``[features, classes]`` and intercepts minimising sklearn's objective, in
    float64 on ``x``'s torch device (divided by the sample count, as sklearn does, so
    ``tol`` means what sklearn's ``tol`` means)."""
    x = x.to(torch.float64)
    n, d = x.shape
    w = torch.zeros(d + 1, n_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w], lr=1, max_iter=max_iter, max_eval=max_iter * 5 // 4, tolerance_grad=tol,
        tolerance_change=64 * float(np.finfo(np.float64).eps), history_size=10,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        opt.zero_grad()
        logits = torch.addmm(w[d], x, w[:d])
        loss = F.cross_entropy(logits, y, reduction="sum") + 0.5 / c * w[:d].square().sum()
        loss = loss / n
        loss.backward()
        return loss

    opt.step(objective)
    return w[:d].detach(), w[d].detach()


def _torch_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    device: str | torch.device,
) -> float:
    x_tr, x_te = (torch.as_tensor(a, device=device, dtype=torch.float64) for a in (x_train, x_test))
    y_tr, y_te = (torch.as_tensor(a, device=device, dtype=torch.long) for a in (y_train, y_test))
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    w, b = fit_logistic_regression(x_tr, y_tr, n_classes)
    pred = torch.addmm(b, x_te, w).argmax(1)
    return float((pred == y_te).double().mean())


def _sklearn_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())


def logistic_regression_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int,
    *, solver: str = "torch", device: str | torch.device = "cpu",
) -> float:
    """Test accuracy of multinomial logistic regression on the raw (scaled) features.

    ``solver``: ``torch`` (on ``device``) or ``sklearn``; both minimise the same objective
    and the figure does not depend on ``seed`` (L-BFGS is deterministic), so the cache
    serves every seed with this split.
    """
    if solver not in ("torch", "sklearn"):
        raise ValueError(f"unknown reference solver {solver!r}; allowed: 'torch', 'sklearn'")
    key = (solver, str(device) if solver == "torch" else "cpu",
           _digest(x_train, y_train, x_test, y_test))
    if key not in _CACHE:
        if solver == "sklearn":
            _CACHE[key] = _sklearn_accuracy(x_train, y_train, x_test, y_test, seed)
        else:
            _CACHE[key] = _torch_accuracy(x_train, y_train, x_test, y_test, device)
    return _CACHE[key]
