"""The evaluation job: stream a cache through the units and compute every §5.3 metric.

:func:`evaluate_job` is a generator (yields :class:`Progress`, returns :class:`EvalResult`),
so the CLI shows a bar and the desktop app runs it on a worker thread and cancels it by closing
it. Memory is bounded: embeddings are read ``chunk_rows`` at a time, and everything except the
binarised-unit thresholds comes from running sums (:class:`UnitAccumulator`). The thresholds
(the top 30 % of each unit's positive activations) need each unit's whole activation column;
those columns are kept for as many units as ``memory_mb`` allows, and further passes over the
cache handle the rest (one pass for 8,192 units × 20,000 images at the default budget).

No Qt, no printing.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.cache import EmbeddingCache
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.eval.data import (
    EvalLabels, RawUnits, SaeUnits, balanced_subset, encoder_json, iter_rows, load_eval_labels,
    make_units)
from medsae_desktop.core.eval.metrics import (
    ACTIVE_EPS, ALIVE_CORR, TOP_FRACTION, BestUnits, BinaryCounts, ReconAccumulator,
    UnitAccumulator, UnitMoments, alive_by_correlation, best_unit_per_label,
    top_fraction_thresholds, unit_entropy, varying_labels)
from medsae_desktop.core.progress import Progress

REPORT_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation (saved in ``summary.json``)."""

    uncertain: str = "zeros"
    """Uncertainty policy for −1 labels: zeros, ones or ignore (DESIGN.md §5.3)."""
    balanced: int | None = None
    """Evaluate only the official balanced subset with this many images per label (e.g. 200)."""
    chunk_rows: int = 4096
    """Images read and encoded at a time."""
    memory_mb: int = 2048
    """Budget for the activation columns kept for binarised-unit thresholds."""
    f1: bool = True
    """Compute precision/recall/F1 of binarised units (needs the columns above)."""
    monosemanticity: bool = True
    """Compute the monosemanticity score (one (K, D) running sum)."""
    alive_corr: float = ALIVE_CORR
    """max_c |ρ| above which a unit is alive."""
    top_fraction: float = TOP_FRACTION
    """Fraction of positive activations that fire when binarising."""
    active_eps: float = ACTIVE_EPS
    """Activation above which a unit is active."""


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Everything one evaluation computed; :func:`medsae_desktop.core.eval.write_report` saves it.

    Attributes
    ----------
    summary
        The JSON-able ``summary.json`` content (means, per-label table, reconstruction, config).
    label_names
        C label names.
    rows_n
        Cache rows evaluated (increasing).
    moments
        Frequency, mean, min, max, ρ (K, C), MS per unit.
    entropy_k, alive_k
        Entropy and alive-by-correlation flag per unit.
    best
        Best unit per label.
    thresholds_k, precision_kc, recall_kc, f1_kc
        Binarised units (None when ``EvalConfig.f1`` is off).
    """

    summary: dict[str, Any]
    label_names: tuple[str, ...]
    rows_n: np.ndarray
    moments: UnitMoments
    entropy_k: np.ndarray
    alive_k: np.ndarray
    best: BestUnits
    thresholds_k: np.ndarray | None
    precision_kc: np.ndarray | None
    recall_kc: np.ndarray | None
    f1_kc: np.ndarray | None

    @property
    def kind(self) -> str:
        """``"sae"`` or ``"raw"``."""
        return str(self.summary["kind"])

    @property
    def n_units(self) -> int:
        """K."""
        return int(self.moments.frequency_k.shape[0])

    @property
    def corr_kc(self) -> np.ndarray:
        """Pearson ρ (K, C)."""
        return self.moments.corr_kc


def evaluate_job(
    cache_path: str | os.PathLike[str],
    *,
    sae_dir: str | os.PathLike[str] | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    images_root: str | os.PathLike[str] | None = None,
    config: EvalConfig = EvalConfig(),
) -> Generator[Progress, None, EvalResult]:
    """Evaluate SAE latents (``sae_dir``) or the raw embedding dimensions (``sae_dir=None``).

    Parameters
    ----------
    cache_path
        HDF5 embedding cache (DESIGN.md §4.1).
    sae_dir
        SAE checkpoint folder, or None for ``--raw``.
    labels_csv
        CheXpert-style CSV; default: the cache's ``/labels``.
    images_root
        Folder the cache paths are relative to, for matching CSV rows (default: the CSV's folder).
    config
        See :class:`EvalConfig`.

    Yields
    ------
    Progress
        Images processed (over all passes).

    Returns
    -------
    EvalResult
    """
    t0 = time.perf_counter()
    if config.uncertain not in ("zeros", "ones", "ignore"):
        raise MedsaeError(f"unknown uncertainty policy {config.uncertain!r}")
    yield Progress(0, None, "opening cache")
    with EmbeddingCache(cache_path) as cache:
        units = make_units(sae_dir, cache.embedding_dim)
        labels = load_eval_labels(cache, labels_csv, config.uncertain, images_root)
        rows_n = np.flatnonzero(labels.has_row_n).astype(np.int64)
        if config.balanced is not None:
            if labels.n_labels == 0:
                raise MedsaeError("--balanced needs labels (the cache has none; pass --labels)",
                                  cache_path)
            sub = balanced_subset(labels.y_nc, config.balanced, labels.mask_nc, rows_n)
            rows_n = np.sort(sub)
        n, k, c, d = rows_n.size, units.n_units, labels.n_labels, cache.embedding_dim
        if n == 0:
            raise MedsaeError("no images to evaluate", cache_path)
        y_nc = labels.y_nc[rows_n]
        mask_nc = None if labels.mask_nc is None else labels.mask_nc[rows_n]

        acc = UnitAccumulator(k, c, d if config.monosemanticity else None,
                              active_eps=config.active_eps)
        sae = units.sae if isinstance(units, SaeUnits) else None
        recon = None if sae is None else ReconAccumulator(sae.d_in, sae.d_sae)
        blocks = _unit_blocks(n, k, config) if (config.f1 and c) else [(0, 0)]
        total = n * len(blocks)
        thr_k = np.full(k, np.nan) if config.f1 and c else None
        counts: BinaryCounts | None = None
        done = 0
        for pass_i, (k0, k1) in enumerate(blocks):
            cols_kn = np.empty((k1 - k0, n), np.float32) if k1 > k0 else None
            for start, emb_bd in iter_rows(cache, rows_n, config.chunk_rows):
                b = emb_bd.shape[0]
                acts_bk = units.encode(emb_bd)
                if pass_i == 0:
                    sl = slice(start, start + b)
                    acc.update(acts_bk, y_nc[sl], None if mask_nc is None else mask_nc[sl],
                               emb_bd if config.monosemanticity else None)
                    if recon is not None:
                        xt_bd = sae.normalize(emb_bd)
                        xt_hat_bd = sae.decode(acts_bk)
                        recon.update(xt_bd, xt_hat_bd, emb_bd, sae.denormalize(xt_hat_bd),
                                     acts_bk)
                if cols_kn is not None:
                    cols_kn[:, start:start + b] = acts_bk[:, k0:k1].T
                done += b
                yield Progress(done, total, f"pass {pass_i + 1}/{len(blocks)}: "
                                            f"{done - pass_i * n}/{n} images")
            if cols_kn is not None and thr_k is not None:
                yield Progress(done, total, f"binarising units {k0}-{k1 - 1}")
                thr_k[k0:k1] = top_fraction_thresholds(cols_kn, config.top_fraction,
                                                       config.active_eps)
                blk = _block_counts(cols_kn, thr_k[k0:k1], y_nc, mask_nc, config.active_eps)
                counts = blk if counts is None else _stack_counts(counts, blk)
                del cols_kn

        moments = acc.finalize()
        entropy_k = unit_entropy(moments.corr_kc)
        alive_k = alive_by_correlation(moments.corr_kc, config.alive_corr)
        best = best_unit_per_label(moments.corr_kc, entropy_k, alive_k,
                                   varying_labels(y_nc, mask_nc))
        prec = rec = f1 = None
        if counts is not None:
            prec, rec, f1 = counts.prf()
        recon_metrics = None if recon is None else recon.finalize(moments.frequency_k)
        summary = _summary(
            cache=cache, units=units, labels=labels, config=config, rows_n=rows_n, y_nc=y_nc,
            mask_nc=mask_nc, moments=moments, entropy_k=entropy_k, alive_k=alive_k, best=best,
            f1_kc=f1, prec_kc=prec, rec_kc=rec, recon=recon_metrics,
            elapsed_s=time.perf_counter() - t0, cache_path=Path(cache_path), sae_dir=sae_dir)
    yield Progress(total, total, "done")
    return EvalResult(summary=summary, label_names=labels.names, rows_n=rows_n, moments=moments,
                      entropy_k=entropy_k, alive_k=alive_k, best=best, thresholds_k=thr_k,
                      precision_kc=prec, recall_kc=rec, f1_kc=f1)


def _unit_blocks(n: int, k: int, config: EvalConfig) -> list[tuple[int, int]]:
    per_unit = 4 * n
    # The sort in top_fraction_thresholds works on ~64 MB slices, so the columns dominate.
    cap = max(1, int(config.memory_mb * 2 ** 20 // max(per_unit, 1)))
    step = min(k, cap)
    return [(k0, min(k, k0 + step)) for k0 in range(0, k, step)]


def _block_counts(cols_kn: np.ndarray, thr_k: np.ndarray, y_nc: np.ndarray,
                  mask_nc: np.ndarray | None, eps: float) -> BinaryCounts:
    thr = np.where(np.isnan(thr_k), np.inf, thr_k).astype(np.float32)
    y1_nc = (y_nc == 1).astype(np.float32)
    m_nc = np.ones_like(y1_nc) if mask_nc is None else mask_nc.astype(np.float32)
    my_nc = m_nc * y1_nc
    tp = np.zeros((cols_kn.shape[0], y_nc.shape[1]), np.int64)
    fired = np.zeros_like(tp)
    step = max(1, (64 << 20) // max(1, 4 * cols_kn.shape[1]))
    for k0 in range(0, cols_kn.shape[0], step):
        blk = cols_kn[k0:k0 + step]
        b_kn = ((blk >= thr[k0:k0 + step, None]) & (blk > eps)).astype(np.float32)
        tp[k0:k0 + step] = np.rint(b_kn @ my_nc).astype(np.int64)
        fired[k0:k0 + step] = np.rint(b_kn @ m_nc).astype(np.int64)
    return BinaryCounts(tp, fired, my_nc.sum(axis=0).astype(np.int64))


def _stack_counts(a: BinaryCounts, b: BinaryCounts) -> BinaryCounts:
    return BinaryCounts(np.concatenate([a.tp_kc, b.tp_kc]),
                        np.concatenate([a.fired_kc, b.fired_kc]), a.pos_c)


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _summary(*, cache: EmbeddingCache, units: RawUnits | SaeUnits, labels: EvalLabels,
             config: EvalConfig, rows_n: np.ndarray, y_nc: np.ndarray,
             mask_nc: np.ndarray | None, moments: UnitMoments, entropy_k: np.ndarray,
             alive_k: np.ndarray, best: BestUnits, f1_kc: np.ndarray | None,
             prec_kc: np.ndarray | None, rec_kc: np.ndarray | None,
             recon: dict[str, float] | None, elapsed_s: float, cache_path: Path,
             sae_dir: object) -> dict[str, Any]:
    from medsae_desktop import __version__

    k = units.n_units
    ms_k = moments.ms_k
    ms_ok = ms_k[np.isfinite(ms_k)]
    pos_nc = (y_nc == 1) if mask_nc is None else ((y_nc == 1) & mask_nc)
    per_label = []
    for j, name in enumerate(labels.names):
        row: dict[str, Any] = {
            "label": name,
            "n_positive": int(pos_nc[:, j].sum()),
            "n_labelled": int(moments.n_labelled_c[j]),
            "best_unit": int(best.unit_c[j]),
            "best_corr": _finite(best.corr_c[j]),
            "best_entropy": _finite(best.entropy_c[j]),
        }
        if f1_kc is not None and prec_kc is not None and rec_kc is not None and row[
                "best_unit"] >= 0:
            u = int(np.argmax(f1_kc[:, j]))
            row.update(best_f1_unit=u, best_f1=float(f1_kc[u, j]),
                       best_f1_precision=float(prec_kc[u, j]),
                       best_f1_recall=float(rec_kc[u, j]))
        per_label.append(row)
    best_f1 = [r["best_f1"] for r in per_label if "best_f1" in r]
    alive_entropy = entropy_k[alive_k]
    summary: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": units.kind,
        "cache": str(cache_path),
        "sae": None if sae_dir is None else str(sae_dir),
        "sae_id": getattr(units.sae, "sae_id", None),
        "units": units.describe(),
        "encoder": encoder_json(cache),
        "n_images": int(rows_n.size),
        "n_images_in_cache": len(cache),
        "n_units": k,
        "labels": list(labels.names),
        "label_source": labels.source,
        "config": dataclasses.asdict(config),
        # The contract's model summary (DESIGN.md §5.3).
        "mean_best_corr": _finite(best.mean_corr),
        "mean_best_entropy": _finite(best.mean_entropy),
        # Further means.
        "n_alive": int(alive_k.sum()),
        "frac_alive": float(alive_k.mean()) if k else math.nan,
        "mean_entropy_alive": _finite(float(alive_entropy.mean())) if alive_entropy.size else None,
        "mean_ms": _finite(float(ms_ok.mean())) if ms_ok.size else None,
        "std_ms": _finite(float(ms_ok.std())) if ms_ok.size else None,
        "n_ms": int(ms_ok.size),
        "mean_best_f1": _finite(float(np.mean(best_f1))) if best_f1 else None,
        "n_never_active": int((moments.frequency_k == 0).sum()),
        "median_frequency": float(np.median(moments.frequency_k)) if k else None,
        "per_label": per_label,
        "reconstruction": None if recon is None else {a: _finite(b) for a, b in recon.items()},
        "created_by": f"medsae-desktop {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 3),
    }
    return summary
