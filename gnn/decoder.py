"""The link decoder: standardised logistic regression fitted by Newton's method, NumPy only.

Kept apart from :mod:`gnn.linkpred` (which needs torch) so the worker can fit it in a small
child process (:func:`fit_decoder`, see ``stream.worker.fit_pool``): a fit on 100k samples
holds the GIL for much of its ~70-90 ms of NumPy; in the worker's own process it took a quarter
of the GIL at 20,000 events/s (py-spy ``--gil``), time the event loop and the batch waited for.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LogisticDecoder", "fit_decoder"]


class LogisticDecoder:
    """Standardised logistic regression with an L2 penalty, fitted by Newton's method (IRLS)
    with a backtracking line search (session 14: without it, a stream whose positives nearly
    separate from its negatives — DARPA's repeated pairs — sent a fit's intercept to ±1e13, and
    every later fit, started from that one, stayed there).

    A handful of features and up to ~10^5 samples: a few Newton steps in NumPy take
    milliseconds, need no torch threads (so a background fit does not fight the stream's
    kernels for cores) and are deterministic.
    """

    def __init__(self, *, l2: float = 1e-3) -> None:
        self.l2 = l2
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.w: np.ndarray | None = None
        self.b = 0.0
        self.steps = 0  # Newton steps the last fit took

    @property
    def fitted(self) -> bool:
        return self.w is not None

    def fit(self, x: np.ndarray, y: np.ndarray, *, iters: int = 25, tol: float = 1e-8,
            start: "LogisticDecoder | None" = None) -> "LogisticDecoder":
        """Fit on samples ``x`` with labels ``y``. ``start``: a fitted decoder to take the first
        Newton step from (online refits: the optimum is unique, so only the step count changes)."""
        self.mean, self.std = x.mean(0), x.std(0) + 1e-9
        z = np.c_[(x - self.mean) / self.std, np.ones(len(x))]
        y = np.asarray(y, np.float64)
        beta = np.zeros(z.shape[1])
        if start is not None and start.w is not None and len(start.w) == x.shape[1]:
            raw = start.w / start.std  # start's logit in raw units, re-expressed in this fit's standardisation
            beta[:-1], beta[-1] = raw * self.std, start.b + (self.mean - start.mean) @ raw
        reg = np.full(z.shape[1], self.l2 * len(x))
        reg[-1] = 0.0  # the intercept is not penalised
        loss = _loss(z, y, beta, reg)
        if start is not None and not loss <= (zero := _loss(z, y, np.zeros_like(beta), reg)):
            beta, loss = np.zeros_like(beta), zero  # a start worse than nothing (or not finite) is dropped
        self.steps = 0
        for _ in range(iters):
            self.steps += 1
            p = _sigmoid(z @ beta)
            grad = z.T @ (p - y) + reg * beta
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(z.shape[1])
            step = np.linalg.solve(hess, grad)
            # Far from the optimum a full Newton step can overshoot (classes that nearly separate):
            # halve it until the loss falls enough. Near it, where the loss's float precision can no
            # longer tell steps apart, full steps converge quadratically, as plain Newton does.
            t, decrement, new = 1.0, float(grad @ step), None
            if decrement > 1e-10 * (1.0 + abs(loss)):
                while (new := _loss(z, y, beta - t * step, reg)) > loss - 1e-4 * t * decrement and t > 1e-10:
                    t *= 0.5
            beta = beta - t * step
            loss = _loss(z, y, beta, reg) if new is None else new
            if t * np.abs(step).max() < tol:
                break
        self.w, self.b = beta[:-1], float(beta[-1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.w is None:
            raise RuntimeError("decoder is not fitted")
        return _sigmoid(((x - self.mean) / self.std) @ self.w + self.b)


def fit_decoder(x: np.ndarray, y: np.ndarray, start: LogisticDecoder | None = None) -> LogisticDecoder:
    """A new decoder fitted on ``x``, ``y`` from ``start`` (module-level: picklable for a process pool)."""
    return LogisticDecoder().fit(x, y, start=start)


def _loss(z: np.ndarray, y: np.ndarray, beta: np.ndarray, reg: np.ndarray) -> float:
    """The penalised negative log-likelihood that :meth:`LogisticDecoder.fit` minimises."""
    eta = z @ beta
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * (reg * beta) @ beta)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # overflow-free logistic
