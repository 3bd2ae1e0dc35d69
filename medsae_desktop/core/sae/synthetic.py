"""Synthetic data with a known sparse dictionary (tests, benchmarks, demos).

x = s·D + noise, with D a random unit-norm dictionary (n_atoms, d) and s a sparse non-negative
code: each sample uses a few atoms drawn with Zipf-like frequencies, as real features are.
A good SAE recovers the atoms as decoder rows; :func:`recovery_score` measures that.

numpy only; no printing.
"""

from __future__ import annotations

import numpy as np


def make_dictionary_data(n: int, d: int, n_atoms: int, k_active: int, *, noise: float = 0.01,
                         seed: int = 0, zipf: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n`` vectors from a sparse model over a random unit-norm dictionary.

    Parameters
    ----------
    n, d, n_atoms
        Samples, dimension, dictionary size.
    k_active
        Mean number of active atoms per sample (Poisson, at least one).
    noise
        Std of isotropic Gaussian noise per coordinate.
    seed
        Seed of everything.
    zipf
        Atom frequency ∝ rank^-zipf (0 = uniform).

    Returns
    -------
    x_nd : float32 (n, d)
    D_ad : float32 (n_atoms, d), unit-norm rows
    """
    rng = np.random.default_rng(seed)
    D_ad = rng.standard_normal((n_atoms, d)).astype(np.float32)
    D_ad /= np.linalg.norm(D_ad, axis=1, keepdims=True)
    cdf_a = np.cumsum(np.arange(1, n_atoms + 1, dtype=np.float64) ** -zipf)
    cdf_a /= cdf_a[-1]
    k_max = max(1, int(k_active + 4 * np.sqrt(k_active) + 1))
    counts_n = np.clip(rng.poisson(k_active, size=n), 1, k_max)
    x_nd = np.zeros((n, d), np.float32)
    for lo in range(0, n, 16_384):
        hi = min(n, lo + 16_384)
        # Atom draws may repeat within a sample (rare for n_atoms ≫ k): harmless, they add up.
        atoms_nk = np.minimum(np.searchsorted(cdf_a, rng.random((hi - lo, k_max))), n_atoms - 1)
        coef_nk = rng.uniform(0.5, 1.5, size=(hi - lo, k_max)).astype(np.float32)
        coef_nk *= np.arange(k_max)[None, :] < counts_n[lo:hi, None]
        for j in range(k_max):
            x_nd[lo:hi] += coef_nk[:, j:j + 1] * D_ad[atoms_nk[:, j]]
    x_nd += noise * rng.standard_normal((n, d)).astype(np.float32)
    return x_nd, D_ad


def recovery_score(D_ad: np.ndarray, W_dec_sd: np.ndarray) -> float:
    """Mean over true atoms of the best cosine similarity with any decoder row."""
    A = D_ad / np.linalg.norm(D_ad, axis=1, keepdims=True)
    W = W_dec_sd / np.maximum(np.linalg.norm(W_dec_sd, axis=1, keepdims=True), 1e-12)
    best = np.full(len(A), -1.0)
    for lo in range(0, len(W), 4096):
        best = np.maximum(best, (A @ W[lo:lo + 4096].T).max(axis=1))
    return float(best.mean())
