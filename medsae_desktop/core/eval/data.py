"""What an evaluation runs on: units (SAE latents or raw dimensions), labels, image rows.

* :class:`RawUnits` / :class:`SaeUnits` turn embedding chunks into unit activations;
* :func:`load_eval_labels` gets labels from the cache's ``/labels`` or a CheXpert-style CSV,
  aligned to cache rows, with an explicit uncertainty policy;
* :func:`balanced_subset` is the official "CheXpert 5x200"-style selection;
* :func:`iter_rows` reads chosen cache rows in bounded chunks.

No Qt, no printing, no torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medsae_desktop.core.cache import EmbeddingCache
from medsae_desktop.core.errors import MedsaeError

UncertaintyPolicy = Literal["zeros", "ones", "ignore"]
UNCERTAINTY_POLICIES: tuple[str, ...] = ("zeros", "ones", "ignore")


# ---- units ------------------------------------------------------------------------------------
class RawUnits:
    """The embedding dimensions themselves as units (``--raw``).

    Parameters
    ----------
    d
        Embedding width D (= number of units).
    """

    kind = "raw"

    def __init__(self, d: int) -> None:
        self.n_units = int(d)
        self.sae = None

    def encode(self, x_nd: np.ndarray) -> np.ndarray:
        """Activations (n, D): the embeddings as float32."""
        return np.asarray(x_nd, dtype=np.float32)

    def describe(self) -> dict[str, object]:
        """JSON-able description for reports."""
        return {"kind": "raw", "n_units": self.n_units}


class SaeUnits:
    """SAE latents as units.

    Parameters
    ----------
    sae
        A loaded :class:`medsae_desktop.core.sae.SAE`.
    """

    kind = "sae"

    def __init__(self, sae: object) -> None:
        self.sae = sae
        self.n_units = int(sae.d_sae)  # type: ignore[attr-defined]

    def encode(self, x_nd: np.ndarray) -> np.ndarray:
        """Latent activations (n, d_sae)."""
        return self.sae.encode(x_nd)  # type: ignore[attr-defined,no-any-return]

    def describe(self) -> dict[str, object]:
        """JSON-able description for reports."""
        s: Any = self.sae
        return {"kind": "sae", "n_units": self.n_units, "arch": s.arch, "d_in": s.d_in,
                "d_sae": s.d_sae, "k": s.k, "sae_id": s.sae_id,
                "path": None if s.path is None else str(s.path)}


def make_units(sae_dir: str | os.PathLike[str] | None, embedding_dim: int) -> RawUnits | SaeUnits:
    """Units for ``--sae SAE_DIR`` (None = raw dimensions); checks the widths agree."""
    if sae_dir is None:
        return RawUnits(embedding_dim)
    from medsae_desktop.core.sae import load_sae

    sae = load_sae(sae_dir)
    if sae.d_in != embedding_dim:
        raise MedsaeError(f"SAE expects {sae.d_in}-d inputs but the cache holds "
                          f"{embedding_dim}-d embeddings", sae_dir)
    return SaeUnits(sae)


# ---- labels -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalLabels:
    """Labels aligned to every cache row, after the uncertainty policy.

    Attributes
    ----------
    names
        Label names, length C.
    y_nc
        float32 (N, C), no NaN: blanks (and rows without labels) are 0 (DESIGN.md §5.3).
    mask_nc
        bool (N, C) of entries that count, or None when all do (only ``ignore`` masks).
    has_row_n
        bool (N,): the row has labels at all (False for cache rows missing from a CSV).
    source
        ``"cache"``, the CSV path, or ``"none"``.
    policy
        The uncertainty policy applied.
    """

    names: tuple[str, ...]
    y_nc: np.ndarray
    mask_nc: np.ndarray | None
    has_row_n: np.ndarray
    source: str
    policy: str

    @property
    def n_labels(self) -> int:
        """C."""
        return len(self.names)


def resolve_labels(raw_nc: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply an uncertainty policy to labels as read (1, 0, −1, NaN).

    Returns
    -------
    y_nc, mask_nc
        ``y_nc`` float32 without NaN (blank → 0, the official ``nan_to_num``); ``mask_nc`` marks
        the entries that count — None except for ``ignore``, where uncertain entries are left out
        of that label's statistics.
    """
    from medsae_desktop.core.labels import apply_uncertainty_policy

    if policy not in UNCERTAINTY_POLICIES:
        raise MedsaeError(f"unknown uncertainty policy {policy!r} (zeros, ones or ignore)")
    raw_nc = np.asarray(raw_nc, dtype=np.float32)
    mask_nc = ~(raw_nc == -1.0) if policy == "ignore" else None
    resolved_nc = apply_uncertainty_policy(raw_nc, policy)  # type: ignore[arg-type]
    y_nc = np.nan_to_num(resolved_nc, nan=0.0)
    return y_nc.astype(np.float32), mask_nc


def default_images_root(cache: EmbeddingCache) -> Path:
    """Folder the cache's ``/paths`` are relative to.

    A root attribute (``images_root``, ``input_dir`` or ``input``) or an ``input`` key of the
    encoder description when the cache builder stored one, else the cache file's folder.
    """
    import h5py

    with h5py.File(cache.path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
    for key in ("images_root", "input_dir", "input_root", "input"):
        if key in attrs:
            v = attrs[key]
            v = v.decode() if isinstance(v, bytes) else str(v)
            p = Path(v)
            if p.suffix.lower() == ".csv":
                p = p.parent
            if p.is_dir():
                return p
    enc = cache.encoder
    for key in ("images_root", "input_dir", "input"):
        if isinstance(enc.get(key), str) and Path(enc[key]).is_dir():
            return Path(enc[key])
    return cache.path.parent


def load_eval_labels(cache: EmbeddingCache, labels_csv: str | os.PathLike[str] | None,
                     policy: str = "zeros",
                     images_root: str | os.PathLike[str] | None = None) -> EvalLabels:
    """Labels for every cache row: from ``labels_csv`` when given, else the cache's ``/labels``.

    Cache rows whose path the CSV does not list get ``has_row_n = False`` and are left out of
    the evaluation (treating them as all-negative would bias every correlation).
    """
    n = len(cache)
    if labels_csv is not None:
        from medsae_desktop.core.labels import read_label_csv

        table = read_label_csv(labels_csv)
        root = Path(images_root) if images_root is not None else Path(labels_csv).parent
        matcher = table.match(root)
        rows = [matcher.row_of(p) for p in cache.paths.tolist()]
        has_n = np.array([r is not None for r in rows], bool)
        if not has_n.any():
            raise MedsaeError(f"no image of the cache is listed in the labels CSV (paths looked up "
                              f"relative to {root}; pass --images-root)", labels_csv)
        raw_nc = np.full((n, len(table.names)), np.nan, np.float32)
        idx = np.array([r for r in rows if r is not None], np.int64)
        raw_nc[has_n] = table.values_nc[idx]
        y_nc, mask_nc = resolve_labels(raw_nc, policy)
        return EvalLabels(tuple(table.names), y_nc, mask_nc, has_n, str(labels_csv), policy)
    if cache.has_labels:
        raw_nc = cache.read_labels()
        y_nc, mask_nc = resolve_labels(raw_nc, policy)
        has_n = ~np.all(np.isnan(raw_nc), axis=1) if raw_nc.shape[1] else np.ones(n, bool)
        if not has_n.any():
            has_n = np.ones(n, bool)
        return EvalLabels(tuple(cache.label_names), y_nc, mask_nc, has_n, "cache", policy)
    return EvalLabels((), np.zeros((n, 0), np.float32), None, np.ones(n, bool), "none", policy)


def balanced_subset(y_nc: np.ndarray, n_per_class: int, mask_nc: np.ndarray | None = None,
                    candidates_n: np.ndarray | None = None) -> np.ndarray:
    """The official balanced multi-label subset ("CheXpert 5x200" style, ``get_chexpert5x200``).

    Scan rows in order; skip a row with no positive label; skip it if any of its positive labels
    already has ``n_per_class`` rows; otherwise take it and count it for all its positive labels;
    stop once every label has ``n_per_class``.

    Parameters
    ----------
    y_nc
        Labels after the uncertainty policy (positive = exactly 1), (N, C).
    n_per_class
        The per-label quota (200 officially).
    mask_nc
        Entries that count (None = all).
    candidates_n
        Rows to scan, in scan order (default all rows).

    Returns
    -------
    np.ndarray
        Chosen row indices, int64, in scan order.
    """
    pos_nc = np.asarray(y_nc) == 1
    if mask_nc is not None:
        pos_nc &= np.asarray(mask_nc, bool)
    c = pos_nc.shape[1]
    order = np.arange(pos_nc.shape[0]) if candidates_n is None else np.asarray(candidates_n)
    counts_c = np.zeros(c, np.int64)
    chosen: list[int] = []
    any_pos = pos_nc.any(axis=1)
    for i in order.tolist():
        if not any_pos[i]:
            continue
        p = np.flatnonzero(pos_nc[i])
        if (counts_c[p] >= n_per_class).any():
            continue
        chosen.append(i)
        counts_c[p] += 1
        if (counts_c >= n_per_class).all():
            break
    return np.asarray(chosen, np.int64)


# ---- rows -------------------------------------------------------------------------------------
def iter_rows(cache: EmbeddingCache, rows_n: np.ndarray,
              chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Embeddings of the given cache rows, in chunks.

    Parameters
    ----------
    rows_n
        Increasing cache row indices.
    chunk_rows
        At most this many rows per chunk.

    Yields
    ------
    (start, emb_bd)
        ``start`` = position in ``rows_n`` of the chunk's first row.
    """
    rows_n = np.asarray(rows_n, np.int64)
    n_all = len(cache)
    if rows_n.size == n_all:  # everything: plain slices are the fast path
        for start in range(0, n_all, chunk_rows):
            yield start, cache.read_embeddings(start, min(n_all, start + chunk_rows))
        return
    for start in range(0, rows_n.size, chunk_rows):
        sel = rows_n[start:start + chunk_rows]
        if int(sel[-1]) - int(sel[0]) < 4 * sel.size:
            # Read the covering slice and pick: cheaper than HDF5 point selection, and bounded.
            block = cache.read_embeddings(int(sel[0]), int(sel[-1]) + 1)
            yield start, block[sel - sel[0]]
        else:
            yield start, cache.take_embeddings(sel)


def encoder_json(cache: EmbeddingCache) -> dict[str, object]:
    """The cache's encoder description (JSON-safe copy)."""
    return json.loads(json.dumps(cache.encoder, default=str))
