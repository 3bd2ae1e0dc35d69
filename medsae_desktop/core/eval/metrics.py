"""Interpretability metrics of DESIGN.md §5.3 on numpy arrays, in-memory or streamed.

Every per-unit statistic the evaluation reports is built from running sums over image chunks
(:class:`UnitAccumulator`), so a cache of any length is evaluated in bounded memory; the
in-memory helpers (:func:`correlation_matrix`, :func:`monosemanticity_scores`, ...) are the
same code fed with one chunk. Shape letters: ``n`` images, ``k`` units (SAE latents or raw
embedding dimensions), ``c`` labels, ``d`` embedding width.

Definitions (the official MedSAE code, ``reference/paper.md`` §6):

* Pearson ρ[k, c] between raw activations and labels; a constant column gives ρ = 0.
* Alive-by-correlation: max_c |ρ[k, c]| > 0.2.
* Entropy: p = |ρ| / (Σ_c |ρ| + 1e-8), H = −Σ_c p ln(p + 1e-10).
* Per label: best unit = signed argmax_k ρ[k, c] over alive units.
* Monosemanticity score (Pach et al.) with min–max scaled activations ã and image embeddings e:
  MS[k] = Σ_{n<m} ã_nk ã_mk cos(e_n, e_m) / Σ_{n<m} ã_nk ã_mk, NaN when the denominator is 0.
  Computed without any N×N matrix through Σ_{n,m} ã_n ã_m ê_n·ê_m = ‖Σ_n ã_n ê_n‖² (ê unit
  vectors), so numerator = (‖Σ ã ê‖² − Σ ã²)/2 and denominator = ((Σ ã)² − Σ ã²)/2. Min–max
  scaling is affine, so these sums follow from sums of the *unscaled* activations in a single
  pass, with the per-unit min and max only known at the end.
* Binarised units: a unit fires on an image when its activation is ≥ the m-th largest of its
  positive (> 1e-7) activations, m = ceil(0.30 · #positives) (the official "top 30 % of positive
  activations"); precision/recall/F1 of that binary unit against each label.

No Qt, no printing, no torch.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: An activation above this counts as "active" (the official code's 1e-7).
ACTIVE_EPS = 1e-7
#: max_c |ρ| above this makes a unit alive (official value).
ALIVE_CORR = 0.2
#: Fraction of a unit's positive activations kept when binarising it (official value).
TOP_FRACTION = 0.30
#: A unit is "dense" when it fires on more than this fraction of images (SAE health metric).
DENSE_FREQUENCY = 0.1


@dataclasses.dataclass(frozen=True)
class UnitMoments:
    """Per-unit statistics finalised from a :class:`UnitAccumulator`.

    Attributes
    ----------
    n_images
        Number of images seen.
    frequency_k
        Fraction of images on which the unit is active (> 1e-7).
    mean_k, min_k, max_k
        Mean, minimum and maximum activation.
    corr_kc
        Pearson correlation with each label (0 for constant columns); (K, 0) without labels.
    ms_k
        Monosemanticity score, NaN for dead units; all NaN when no embeddings were given.
    n_labelled_c
        Images that entered each label's statistics (fewer than ``n_images`` only under the
        ``ignore`` uncertainty policy).
    """

    n_images: int
    frequency_k: np.ndarray
    mean_k: np.ndarray
    min_k: np.ndarray
    max_k: np.ndarray
    corr_kc: np.ndarray
    ms_k: np.ndarray
    n_labelled_c: np.ndarray


class UnitAccumulator:
    """Running sums for per-unit statistics over image chunks (one pass, bounded memory).

    Memory is O(K·D + K·C) float64, independent of the number of images.

    Parameters
    ----------
    n_units
        K.
    n_labels
        C (0 when there are no labels).
    emb_dim
        D of the image embeddings used by the monosemanticity score, or None to skip it.
    active_eps
        Activation above which a unit counts as active.

    Notes
    -----
    Activations are shifted by a per-unit constant (the first chunk's minimum, usually exactly 0
    for ReLU latents) before summing, which keeps the variance and min–max algebra free of
    catastrophic cancellation when a unit's values sit far from zero.
    """

    def __init__(self, n_units: int, n_labels: int = 0, emb_dim: int | None = None,
                 *, active_eps: float = ACTIVE_EPS) -> None:
        k, c = int(n_units), int(n_labels)
        self.n_units, self.n_labels, self.emb_dim = k, c, emb_dim
        self.active_eps = float(active_eps)
        self.n = 0
        self._shift_k: np.ndarray | None = None
        f8 = np.float64
        self._s1_k = np.zeros(k, f8)
        self._s2_k = np.zeros(k, f8)
        self._lo_k = np.full(k, np.inf, f8)
        self._hi_k = np.full(k, -np.inf, f8)
        self._n_active_k = np.zeros(k, np.int64)
        # Per-label (masked) sums for Pearson.
        self._m_c = np.zeros(c, f8)
        self._sy_c = np.zeros(c, f8)
        self._syy_c = np.zeros(c, f8)
        self._smb_kc = np.zeros((k, c), f8)
        self._smbb_kc = np.zeros((k, c), f8)
        self._smby_kc = np.zeros((k, c), f8)
        # Monosemanticity sums (ê = unit embedding, q = ‖ê‖² ∈ {0, 1}).
        if emb_dim is not None:
            self._t_kd = np.zeros((k, int(emb_dim)), f8)
            self._u_d = np.zeros(int(emb_dim), f8)
            self._nq = 0.0
            self._s1q_k = np.zeros(k, f8)
            self._s2q_k = np.zeros(k, f8)

    def update(self, acts_nk: np.ndarray, labels_nc: np.ndarray | None = None,
               mask_nc: np.ndarray | None = None, emb_nd: np.ndarray | None = None) -> None:
        """Add one chunk of images.

        Parameters
        ----------
        acts_nk
            Activations of the chunk's images, (n, K).
        labels_nc
            Labels (n, C) without NaN (required when ``n_labels`` > 0).
        mask_nc
            Which labels count for each image (bool (n, C)); None = all.
        emb_nd
            Image embeddings (n, D) (required when ``emb_dim`` was given); normalised here.
        """
        acts_nk = np.asarray(acts_nk, dtype=np.float32)
        n = acts_nk.shape[0]
        assert acts_nk.ndim == 2 and acts_nk.shape[1] == self.n_units, (
            f"expected (n, {self.n_units}) activations, got {acts_nk.shape}")
        if n == 0:
            return
        if self._shift_k is None:
            self._shift_k = acts_nk.min(axis=0).astype(np.float32)
        b_nk = acts_nk - self._shift_k
        bb_nk = b_nk * b_nk
        self.n += n
        self._s1_k += b_nk.sum(axis=0, dtype=np.float64)
        self._s2_k += bb_nk.sum(axis=0, dtype=np.float64)
        np.minimum(self._lo_k, acts_nk.min(axis=0), out=self._lo_k)
        np.maximum(self._hi_k, acts_nk.max(axis=0), out=self._hi_k)
        self._n_active_k += np.count_nonzero(acts_nk > self.active_eps, axis=0)

        if self.n_labels:
            assert labels_nc is not None and labels_nc.shape == (n, self.n_labels), (
                f"expected labels of shape {(n, self.n_labels)}")
            y_nc = np.asarray(labels_nc, dtype=np.float32)
            m_nc = (np.ones_like(y_nc) if mask_nc is None
                    else np.asarray(mask_nc, dtype=np.float32))
            my_nc = m_nc * y_nc
            self._m_c += m_nc.sum(axis=0, dtype=np.float64)
            self._sy_c += my_nc.sum(axis=0, dtype=np.float64)
            self._syy_c += (my_nc * y_nc).sum(axis=0, dtype=np.float64)
            self._smb_kc += b_nk.T @ m_nc
            self._smbb_kc += bb_nk.T @ m_nc
            self._smby_kc += b_nk.T @ my_nc

        if self.emb_dim is not None:
            assert emb_nd is not None and emb_nd.shape == (n, self.emb_dim), (
                f"expected embeddings of shape {(n, self.emb_dim)}")
            e_nd = unit_rows(emb_nd)
            q_n = (np.einsum("nd,nd->n", e_nd, e_nd) > 0.5).astype(np.float32)
            self._t_kd += b_nk.T @ e_nd
            self._u_d += e_nd.sum(axis=0, dtype=np.float64)
            self._nq += float(q_n.sum())
            self._s1q_k += q_n @ b_nk
            self._s2q_k += q_n @ bb_nk

    def finalize(self) -> UnitMoments:
        """Per-unit statistics of everything added so far."""
        k, n = self.n_units, self.n
        nan_k = np.full(k, np.nan)
        if n == 0:
            return UnitMoments(0, np.zeros(k), nan_k, nan_k, nan_k,
                               np.zeros((k, self.n_labels)), nan_k, np.zeros(self.n_labels))
        shift_k = np.asarray(self._shift_k, np.float64)
        mean_k = shift_k + self._s1_k / n
        corr_kc = self._pearson()
        ms_k = self._monosemanticity() if self.emb_dim is not None else nan_k
        return UnitMoments(
            n_images=n,
            frequency_k=self._n_active_k / n,
            mean_k=mean_k,
            min_k=self._lo_k.copy(),
            max_k=self._hi_k.copy(),
            corr_kc=corr_kc,
            ms_k=ms_k,
            n_labelled_c=self._m_c.copy(),
        )

    # ---- internals ------------------------------------------------------------------------
    def _pearson(self) -> np.ndarray:
        if not self.n_labels:
            return np.zeros((self.n_units, 0))
        m_c = np.maximum(self._m_c, 1.0)
        sa_kc, saa_kc, say_kc = self._smb_kc, self._smbb_kc, self._smby_kc
        cov_kc = say_kc - sa_kc * (self._sy_c / m_c)
        va_kc = saa_kc - sa_kc * sa_kc / m_c
        vy_c = self._syy_c - self._sy_c ** 2 / m_c
        # A unit that never changes (dead latent) or a label that is all 0 or all 1 gives 0,
        # as the plotting script's nan_to_num does after torch.corrcoef's NaN.
        const_k = self._hi_k <= self._lo_k
        ok_kc = ((va_kc > 1e-12 * np.maximum(saa_kc, 1e-300)) & (vy_c > 0)[None, :]
                 & ~const_k[:, None] & (self._m_c >= 2)[None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            corr_kc = np.where(ok_kc, cov_kc / np.sqrt(np.abs(va_kc) * vy_c[None, :]), 0.0)
        return np.clip(corr_kc, -1.0, 1.0)

    def _monosemanticity(self) -> np.ndarray:
        n = float(self.n)
        shift_k = np.asarray(self._shift_k, np.float64)
        lo_k, r_k = self._lo_k, self._hi_k - self._lo_k
        delta_k = lo_k - shift_k  # ã = (b − δ) / R with b = a − shift
        live_k = r_k > 0
        r_k = np.where(live_k, r_k, 1.0)
        sum_a_k = (self._s1_k - n * delta_k) / r_k
        sum_a2_k = (self._s2_k - 2 * delta_k * self._s1_k + n * delta_k ** 2) / r_k ** 2
        sum_a2q_k = (self._s2q_k - 2 * delta_k * self._s1q_k + self._nq * delta_k ** 2) / r_k ** 2
        v_kd = (self._t_kd - delta_k[:, None] * self._u_d[None, :]) / r_k[:, None]
        num_k = 0.5 * (np.einsum("kd,kd->k", v_kd, v_kd) - sum_a2q_k)
        den_k = 0.5 * (sum_a_k ** 2 - sum_a2_k)
        # den is exactly 0 for a unit with one non-zero image; the relative floor absorbs the
        # rounding of the sums so such units come out NaN, as in the reference code.
        ok_k = live_k & (den_k > 1e-7 * np.maximum(sum_a_k ** 2, 1e-300))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok_k, num_k / den_k, np.nan)


def unit_rows(x_nd: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x_nd = np.asarray(x_nd, dtype=np.float32)
    norm_n = np.linalg.norm(x_nd, axis=1, keepdims=True)
    return np.divide(x_nd, norm_n, out=np.zeros_like(x_nd), where=norm_n > 0)


# ---- in-memory conveniences ------------------------------------------------------------------
def correlation_matrix(acts_nk: np.ndarray, labels_nc: np.ndarray,
                       mask_nc: np.ndarray | None = None) -> np.ndarray:
    """Pearson ρ (K, C) between activations and labels; constant columns give 0.

    Parameters
    ----------
    acts_nk
        Activations, (N, K).
    labels_nc
        Labels without NaN, (N, C).
    mask_nc
        Optional bool (N, C): entries that count (others are left out of that label's ρ).
    """
    acc = UnitAccumulator(acts_nk.shape[1], labels_nc.shape[1])
    acc.update(acts_nk, labels_nc, mask_nc)
    return acc.finalize().corr_kc


def monosemanticity_scores(acts_nk: np.ndarray, emb_nd: np.ndarray) -> np.ndarray:
    """Monosemanticity score per unit (K,), NaN for dead units (see module docstring)."""
    acc = UnitAccumulator(acts_nk.shape[1], 0, emb_nd.shape[1])
    acc.update(acts_nk, emb_nd=emb_nd)
    return acc.finalize().ms_k


def unit_entropy(corr_kc: np.ndarray) -> np.ndarray:
    """Entropy (natural log) of each unit's |ρ| distribution over labels, (K,)."""
    a_kc = np.abs(np.asarray(corr_kc, dtype=np.float64))
    p_kc = a_kc / (a_kc.sum(axis=1, keepdims=True) + 1e-8)
    return -(p_kc * np.log(p_kc + 1e-10)).sum(axis=1)


def alive_by_correlation(corr_kc: np.ndarray, threshold: float = ALIVE_CORR) -> np.ndarray:
    """bool (K,): max_c |ρ[k, c]| > threshold (False for every unit when C = 0)."""
    corr_kc = np.asarray(corr_kc)
    if corr_kc.shape[1] == 0:
        return np.zeros(corr_kc.shape[0], bool)
    return np.abs(corr_kc).max(axis=1) > threshold


@dataclasses.dataclass(frozen=True)
class BestUnits:
    """The best unit of each label (signed argmax of ρ over alive units).

    Attributes
    ----------
    unit_c
        Best unit per label, −1 when no unit is alive.
    corr_c, entropy_c
        Its ρ and entropy (NaN when there is none).
    """

    unit_c: np.ndarray
    corr_c: np.ndarray
    entropy_c: np.ndarray

    @property
    def mean_corr(self) -> float:
        """``mean_best_corr``: mean of ``corr_c`` over labels that have a best unit."""
        return _nanmean(self.corr_c)

    @property
    def mean_entropy(self) -> float:
        """``mean_best_entropy``: mean of ``entropy_c`` over labels that have a best unit."""
        return _nanmean(self.entropy_c)


def best_unit_per_label(corr_kc: np.ndarray, entropy_k: np.ndarray, alive_k: np.ndarray,
                        valid_c: np.ndarray | None = None) -> BestUnits:
    """Per label: the alive unit with the largest (signed) ρ, its ρ and its entropy.

    Parameters
    ----------
    valid_c
        Labels that vary over the images (bool (C,)). A constant label (no positive image, e.g.
        a CheXpert column the data never fills) has ρ = 0 with every unit, so it has no best
        unit and is left out of the means instead of pulling them towards 0. None = all valid.
    """
    corr_kc = np.asarray(corr_kc, dtype=np.float64)
    c = corr_kc.shape[1]
    alive_idx = np.flatnonzero(alive_k)
    if alive_idx.size == 0 or c == 0:
        return BestUnits(np.full(c, -1), np.full(c, np.nan), np.full(c, np.nan))
    sub_kc = corr_kc[alive_idx]
    best_c = alive_idx[np.argmax(sub_kc, axis=0)].astype(np.int64)
    corr_c = corr_kc[best_c, np.arange(c)]
    entropy_c = np.asarray(entropy_k, np.float64)[best_c]
    if valid_c is not None:
        bad = ~np.asarray(valid_c, bool)
        best_c[bad] = -1
        corr_c = np.where(bad, np.nan, corr_c)
        entropy_c = np.where(bad, np.nan, entropy_c)
    return BestUnits(best_c, corr_c, entropy_c)


def varying_labels(labels_nc: np.ndarray, mask_nc: np.ndarray | None = None) -> np.ndarray:
    """bool (C,): the label takes more than one value over the (masked) images."""
    y_nc = np.asarray(labels_nc, dtype=np.float64)
    if mask_nc is None:
        return (y_nc.max(axis=0, initial=-np.inf) > y_nc.min(axis=0, initial=np.inf)) if len(
            y_nc) else np.zeros(y_nc.shape[1], bool)
    m = np.asarray(mask_nc, bool)
    hi = np.where(m, y_nc, -np.inf).max(axis=0, initial=-np.inf)
    lo = np.where(m, y_nc, np.inf).min(axis=0, initial=np.inf)
    return hi > lo


def top_fraction_thresholds(acts_kn: np.ndarray, fraction: float = TOP_FRACTION,
                            active_eps: float = ACTIVE_EPS) -> np.ndarray:
    """Binarisation threshold per unit: the m-th largest positive activation.

    Parameters
    ----------
    acts_kn
        Activations with units as *rows*, (K, N) (rows are sorted, so this layout is the fast one).
    fraction
        Fraction of the positive activations that fire (0.30 officially); m = ceil(fraction · P).

    Returns
    -------
    np.ndarray
        float64 (K,), NaN for a unit with no positive activation (it never fires).
    """
    acts_kn = np.asarray(acts_kn, dtype=np.float32)
    k, n = acts_kn.shape
    out_k = np.full(k, np.nan)
    step = max(1, (64 << 20) // max(1, 4 * n))  # ~64 MB of rows sorted at a time
    for k0 in range(0, k, step):
        blk = acts_kn[k0:k0 + step]
        pos = blk > active_eps
        p_k = pos.sum(axis=1)
        m_k = np.ceil(fraction * p_k - 1e-9).astype(np.int64)
        m_k = np.where(p_k > 0, np.maximum(m_k, 1), 0)
        srt = np.sort(np.where(pos, blk, -np.inf), axis=1)
        has = m_k > 0
        rows = np.flatnonzero(has)
        out_k[k0 + rows] = srt[rows, n - m_k[rows]]
    return out_k


def fires(acts_nk: np.ndarray, thresholds_k: np.ndarray,
          active_eps: float = ACTIVE_EPS) -> np.ndarray:
    """bool (N, K): the binarised units (activation ≥ threshold and > active_eps)."""
    acts_nk = np.asarray(acts_nk)
    thr_k = np.where(np.isnan(thresholds_k), np.inf, thresholds_k)
    return (acts_nk >= thr_k[None, :]) & (acts_nk > active_eps)


@dataclasses.dataclass(frozen=True)
class BinaryCounts:
    """Counts for precision/recall/F1 of binarised units against labels.

    Attributes
    ----------
    tp_kc
        Images where the unit fires and the label is positive.
    fired_kc
        Images where the unit fires (among those that count for label c).
    pos_c
        Positive images of each label.
    """

    tp_kc: np.ndarray
    fired_kc: np.ndarray
    pos_c: np.ndarray

    def __add__(self, other: "BinaryCounts") -> "BinaryCounts":
        return BinaryCounts(self.tp_kc + other.tp_kc, self.fired_kc + other.fired_kc,
                            self.pos_c + other.pos_c)

    def prf(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision_kc, recall_kc, f1_kc); a zero denominator gives 0 (as sklearn)."""
        tp = self.tp_kc.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(self.fired_kc > 0, tp / self.fired_kc, 0.0)
            rec = np.where(self.pos_c[None, :] > 0, tp / self.pos_c[None, :], 0.0)
            f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
        return prec, rec, f1


def binary_counts(fires_nk: np.ndarray, labels_nc: np.ndarray,
                  mask_nc: np.ndarray | None = None) -> BinaryCounts:
    """Confusion counts of binary units (N, K) against 0/1 labels (N, C) for one chunk."""
    b_nk = np.asarray(fires_nk, dtype=np.float32)
    y_nc = (np.asarray(labels_nc) == 1).astype(np.float32)
    m_nc = np.ones_like(y_nc) if mask_nc is None else np.asarray(mask_nc, np.float32)
    my_nc = m_nc * y_nc
    # float32 matmuls count exactly up to 2**24 images per chunk.
    return BinaryCounts(np.rint(b_nk.T @ my_nc).astype(np.int64),
                        np.rint(b_nk.T @ m_nc).astype(np.int64),
                        my_nc.sum(axis=0).astype(np.int64))


def precision_recall_f1(acts_nk: np.ndarray, labels_nc: np.ndarray,
                        mask_nc: np.ndarray | None = None, *, fraction: float = TOP_FRACTION,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """In-memory precision, recall, F1 (each (K, C)) and thresholds (K,) of binarised units."""
    thr_k = top_fraction_thresholds(np.ascontiguousarray(np.asarray(acts_nk).T), fraction)
    p, r, f = binary_counts(fires(acts_nk, thr_k), labels_nc, mask_nc).prf()
    return p, r, f, thr_k


# ---- reconstruction ---------------------------------------------------------------------------
class ReconAccumulator:
    """Running sums for SAE reconstruction metrics (dictionary_learning's definitions).

    ``update`` takes the normalised input x̃ and its reconstruction (the SAE's training space),
    the original-space pair, and the latent activations.
    """

    def __init__(self, d_in: int, d_sae: int) -> None:
        f8 = np.float64
        self.n = 0
        self._sx_d = np.zeros(d_in, f8)
        self._sxx_d = np.zeros(d_in, f8)
        self._sr_d = np.zeros(d_in, f8)
        self._srr_d = np.zeros(d_in, f8)
        self._sq_err = 0.0
        self._cos = 0.0
        self._ratio = 0.0
        self._xhat2 = 0.0
        self._x_xhat = 0.0
        self._l0 = 0.0
        self._l1 = 0.0
        self._ever_k = np.zeros(d_sae, bool)

    def update(self, xt_nd: np.ndarray, xt_hat_nd: np.ndarray, x_nd: np.ndarray,
               x_hat_nd: np.ndarray, acts_nk: np.ndarray) -> None:
        """Add one chunk."""
        xt = np.asarray(xt_nd, np.float64)
        r = xt - np.asarray(xt_hat_nd, np.float64)
        self.n += xt.shape[0]
        self._sx_d += xt.sum(0)
        self._sxx_d += (xt * xt).sum(0)
        self._sr_d += r.sum(0)
        self._srr_d += (r * r).sum(0)
        self._sq_err += float((r * r).sum())
        x = np.asarray(x_nd, np.float64)
        xh = np.asarray(x_hat_nd, np.float64)
        nx, nxh = np.linalg.norm(x, axis=1), np.linalg.norm(xh, axis=1)
        dot = np.einsum("nd,nd->n", x, xh)
        with np.errstate(invalid="ignore", divide="ignore"):
            self._cos += float(np.nan_to_num(dot / (nx * nxh)).sum())
            self._ratio += float(np.nan_to_num(nxh / nx).sum())
        self._xhat2 += float((nxh ** 2).sum())
        self._x_xhat += float(dot.sum())
        act = np.asarray(acts_nk) != 0
        self._l0 += float(act.sum())
        self._l1 += float(np.abs(acts_nk).sum(dtype=np.float64))
        self._ever_k |= act.any(axis=0)

    def finalize(self, frequency_k: np.ndarray | None = None) -> dict[str, float]:
        """Metric dict: mse, fvu, fve, cosine, l2_ratio, relative_bias, l0, l1, dead/dense."""
        n = max(self.n, 1)
        var_x = (self._sxx_d - self._sx_d ** 2 / n).sum()
        var_r = (self._srr_d - self._sr_d ** 2 / n).sum()
        fvu = float(var_r / var_x) if var_x > 0 else math.nan
        d = self._sx_d.size
        out = {
            "mse": self._sq_err / (n * d),  # mean over elements, normalised space
            "fvu": fvu,
            "fve": 1.0 - fvu,
            "cosine": self._cos / n,
            "l2_ratio": self._ratio / n,
            "relative_bias": self._xhat2 / self._x_xhat if self._x_xhat else math.nan,
            "l0": self._l0 / n,
            "l1": self._l1 / n,
            "dead_fraction": float(1.0 - self._ever_k.mean()),
        }
        if frequency_k is not None:
            out["dense_fraction"] = float(np.mean(np.asarray(frequency_k) > DENSE_FREQUENCY))
        return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan
