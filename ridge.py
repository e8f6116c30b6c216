"""Ridge regression with per-voxel regularisation chosen on chunked bootstraps (the Huth-lab scheme).

Convention (as `bootstrap_ridge` of the Huth lab): singular values are shrunk as s/(s² + α²), i.e. the
ridge penalty is α², so the default grid logspace(1, 4, 15) spans penalties 1e2…1e8. One eigendecomposition
of the smaller Gram matrix per bootstrap serves every alpha; voxels are processed in chunks so 95k voxels fit
in memory. Backends: "numpy" (float32/64 on CPU) and "torch" (CPU or CUDA).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHAS = np.logspace(1, 4, 15)
# alpha selection criteria: R² = 1 − SSres/SStot (the paper's words), Pearson r, or the public reference code's
# criterion (Huth-lab `bootstrap_ridge(use_corr=False)`): sign(R²)·√|R²| with R² = 1 − Var(y − ŷ)/Var(y)
SCORES = ("r2", "corr", "signed_sqrt_r2")


@dataclass
class RidgeResult:
    """Outcome of `bootstrap_ridge`.

    Attributes
    ----------
    alphas : (V,) chosen alpha per voxel (penalty is alpha²).
    predictions : (n_test, V) float32 predictions of the test rows.
    scores : (n_alphas, V) mean held-out validation score per alpha.
    edge_fraction : share of voxels whose alpha is the smallest or largest of the grid, among the voxels whose
        training responses vary (NaN when none does).
    """
    alphas: np.ndarray
    predictions: np.ndarray
    scores: np.ndarray
    edge_fraction: float


def chunked_holdout(n_rows: int, rng: np.random.Generator, chunk_len: int = 20, fraction: float = 0.25) -> np.ndarray:
    """Indices of held-out rows: random contiguous chunks of `chunk_len` rows, about `fraction` of all.

    The last, shorter chunk may be drawn too; the Huth-lab code (`zip(*[iter(rows)] * chunklen)`) never holds it out.
    """
    starts = np.arange(0, n_rows, chunk_len)
    n_chunks = max(1, int(round(fraction * len(starts))))
    chosen = rng.choice(len(starts), n_chunks, replace=False)
    return np.concatenate([np.arange(s, min(s + chunk_len, n_rows)) for s in starts[np.sort(chosen)]])


class _Backend:
    """The few array operations ridge needs, for numpy or torch."""

    def __init__(self, name: str, device: str | None = None, dtype=np.float32):
        self.name = name
        if name == "torch":
            import torch
            self.torch = torch
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.dtype = torch.float32 if dtype == np.float32 else torch.float64
        elif name != "numpy":
            raise ValueError(f"unknown ridge backend {name!r} (expected 'numpy' or 'torch')")
        self.np_dtype = dtype

    def asarray(self, x):
        if self.name == "torch":
            return self.torch.as_tensor(np.ascontiguousarray(x), dtype=self.dtype, device=self.device)
        return np.asarray(x, dtype=self.np_dtype)

    def numpy(self, x):
        return x.detach().cpu().numpy() if self.name == "torch" else x

    def eigh(self, m):
        if self.name == "torch":
            return self.torch.linalg.eigh(m)
        return np.linalg.eigh(m)


def _spectral(b: _Backend, x):
    """Eigen-decomposition of the smaller Gram matrix of x (n, p): returns (mode, eigvals s², basis)."""
    n, p = x.shape
    if n <= p:
        s2, u = b.eigh(x @ x.T)          # x xᵀ = U S² Uᵀ
        return "kernel", s2, u
    s2, v = b.eigh(x.T @ x)              # xᵀ x = V S² Vᵀ
    return "primal", s2, v


def _clip_eigs(b, s2):
    return s2.clip(min=0) if b.name == "numpy" else s2.clamp(min=0)


def _score(b, pred, y, kind: str):
    """Per-voxel validation score (`SCORES`): R² (1 − SSres/SStot), correlation, or the reference's signed √R²,
    whose R² takes the residual's variance (its mean over the held-out rows removed)."""
    if kind in ("r2", "signed_sqrt_r2"):
        res = y - pred
        if kind == "signed_sqrt_r2":
            res = res - res.mean(0)
        r2 = 1.0 - (res ** 2).sum(0) / (((y - y.mean(0)) ** 2).sum(0) + 1e-12)
        # sign(R²)·√|R²| in one expression for numpy and torch alike (0 stays 0)
        return r2 if kind == "r2" else r2 / (abs(r2) ** 0.5 + 1e-30)
    pc, yc = pred - pred.mean(0), y - y.mean(0)
    return (pc * yc).sum(0) / (((pc ** 2).sum(0) * (yc ** 2).sum(0)) ** 0.5 + 1e-12)


def bootstrap_ridge(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas=DEFAULT_ALPHAS,
                    n_boots: int = 3, chunk_len: int = 20, holdout_fraction: float = 0.25, score: str = "r2",
                    voxel_chunk: int = 10000, backend: str = "numpy", device: str | None = None, seed: int = 0,
                    dtype=np.float32) -> RidgeResult:
    """Ridge with a per-voxel alpha chosen on chunked bootstraps, refit on all training rows.

    Parameters
    ----------
    x_train : (n_train, p) delayed, z-scored features of the training TRs.
    y_train : (n_train, V) responses.
    x_test : (n_test, p) features of the test TRs.
    alphas : grid; penalty is alpha² (Huth convention).
    n_boots, chunk_len, holdout_fraction : each bootstrap holds out `holdout_fraction` of the training TRs
        in contiguous chunks of `chunk_len` TRs.
    score : the held-out score averaged over bootstraps to pick each alpha: "r2" (the paper), "corr", or
        "signed_sqrt_r2" (the public reference code's, `bootstrap_ridge(use_corr=False)`); see `SCORES`.
    voxel_chunk : voxels per block (memory ~ n_alphas · n_holdout · voxel_chunk floats).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, found {score!r}")
    if x_train.shape[0] != y_train.shape[0]:
        raise ValueError(f"x_train has {x_train.shape[0]} rows but y_train has {y_train.shape[0]}")
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_test has {x_test.shape[1]} features but x_train has {x_train.shape[1]}")
    b = _Backend(backend, device, dtype)
    rng = np.random.default_rng(seed)
    alphas = np.asarray(alphas, dtype=np.float64)
    n, v = y_train.shape
    scores = np.zeros((len(alphas), v))
    x_all = b.asarray(x_train)
    for _ in range(n_boots):
        held = chunked_holdout(n, rng, chunk_len, holdout_fraction)
        keep = np.setdiff1d(np.arange(n), held)
        x_tr, x_va = x_all[keep], x_all[held]
        mode, s2, basis = _spectral(b, x_tr)
        s2 = _clip_eigs(b, s2)
        left = (x_va @ x_tr.T) @ basis if mode == "kernel" else x_va @ basis
        for v0 in range(0, v, voxel_chunk):
            y_tr = b.asarray(y_train[keep, v0:v0 + voxel_chunk])
            y_va = b.asarray(y_train[held, v0:v0 + voxel_chunk])
            right = basis.T @ y_tr if mode == "kernel" else basis.T @ (x_tr.T @ y_tr)
            for ai, a in enumerate(alphas):
                pred = (left * (1.0 / (s2 + a ** 2))[None, :]) @ right
                scores[ai, v0:v0 + voxel_chunk] += b.numpy(_score(b, pred, y_va, score)) / n_boots
    best = np.nanargmax(np.nan_to_num(scores, nan=-np.inf), axis=0)
    chosen = alphas[best]
    predictions = ridge_predict(x_train, y_train, x_test, chosen, voxel_chunk, b)
    # constant voxels (NaN-filled in the data) score the same at every alpha and would all sit at the lower edge
    varying = np.asarray(y_train.max(axis=0) > y_train.min(axis=0))
    at_edge = (best == 0) | (best == len(alphas) - 1)
    edge = float(at_edge[varying].mean()) if varying.any() else float("nan")
    return RidgeResult(alphas=chosen, predictions=predictions, scores=scores, edge_fraction=edge)


def ridge_predict(x_train, y_train, x_test, voxel_alphas: np.ndarray, voxel_chunk: int = 10000,
                  backend: "_Backend | str" = "numpy") -> np.ndarray:
    """Fit ridge on all training rows with each voxel's own alpha (penalty alpha²) and predict x_test.

    Returns (n_test, V) float32.
    """
    b = backend if isinstance(backend, _Backend) else _Backend(backend)
    x_tr, x_te = b.asarray(x_train), b.asarray(x_test)
    mode, s2, basis = _spectral(b, x_tr)
    s2 = _clip_eigs(b, s2)
    left = (x_te @ x_tr.T) @ basis if mode == "kernel" else x_te @ basis
    out = np.zeros((x_test.shape[0], y_train.shape[1]), dtype=np.float32)
    for a in np.unique(voxel_alphas):
        vox = np.flatnonzero(voxel_alphas == a)
        for v0 in range(0, len(vox), voxel_chunk):
            idx = vox[v0:v0 + voxel_chunk]
            y = b.asarray(y_train[:, idx])
            right = basis.T @ y if mode == "kernel" else basis.T @ (x_tr.T @ y)
            out[:, idx] = b.numpy((left * (1.0 / (s2 + a ** 2))[None, :]) @ right)
    return out
