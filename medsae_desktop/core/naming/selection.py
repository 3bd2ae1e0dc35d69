"""Which images represent a unit: streaming top-activating rows and random inactive rows.

One pass over the cache (bounded memory, any length) collects for each requested unit its
``n_top`` highest activations (row, value), its active-image count, and a uniform random
sample of ``n_inactive`` rows where it is inactive. From those:

* :func:`naming_rows` — the official MedGemma naming selection (``assign_names_VLM.py``):
  top-k with k = 100, truncated to ``l0 − l0 // 3``, first 15 + last 15, shuffled;
* :func:`scoring_rows` — the official naming-evaluation selection (``naming_eval.py``):
  the 30 top rows (ground truth = active or not) + 30 random inactive rows, shuffled.

No Qt, no printing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence

import numpy as np

from medsae_desktop.core.cache import EmbeddingCache
from medsae_desktop.core.eval.data import iter_rows
from medsae_desktop.core.eval.metrics import ACTIVE_EPS
from medsae_desktop.core.progress import Progress

#: Official MedGemma naming settings.
NAMING_TOP_K = 100
NAMING_EACH_END = 15
#: Official naming-evaluation settings.
SCORING_PER_SIDE = 30


@dataclasses.dataclass(frozen=True)
class UnitRows:
    """Representative rows of each requested unit (cache row indices).

    Attributes
    ----------
    units
        The unit indices, length U.
    top_rows_um, top_vals_um
        Top activations per unit, descending (−1 / −inf padding when fewer images).
    n_active_u
        Images where the unit is active (> eps).
    var_ok_u
        The unit's activation is not constant.
    inactive_rows_ur
        A uniform random sample of rows where the unit is inactive (−1 padding).
    """

    units: np.ndarray
    top_rows_um: np.ndarray
    top_vals_um: np.ndarray
    n_active_u: np.ndarray
    var_ok_u: np.ndarray
    inactive_rows_ur: np.ndarray

    def index(self, unit: int) -> int:
        """Position of ``unit`` in :attr:`units`."""
        hits = np.flatnonzero(self.units == unit)
        if not hits.size:
            raise KeyError(unit)
        return int(hits[0])


def _merge_top(vals_mu: np.ndarray, rows_mu: np.ndarray, new_vals_bu: np.ndarray,
               new_rows_b: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    all_v = np.concatenate([vals_mu, new_vals_bu], axis=0)
    all_r = np.concatenate([rows_mu, np.broadcast_to(new_rows_b[:, None], new_vals_bu.shape)],
                           axis=0)
    if all_v.shape[0] > m:
        idx = np.argpartition(-all_v, m - 1, axis=0)[:m]
        all_v = np.take_along_axis(all_v, idx, axis=0)
        all_r = np.take_along_axis(all_r, idx, axis=0)
    return all_v, all_r


def collect_unit_rows_job(
    cache: EmbeddingCache,
    encode: object,
    units: Sequence[int],
    *,
    rows_n: np.ndarray | None = None,
    n_top: int = NAMING_TOP_K,
    n_inactive: int = SCORING_PER_SIDE,
    seed: int = 42,
    chunk_rows: int = 4096,
    active_eps: float = ACTIVE_EPS,
) -> Generator[Progress, None, UnitRows]:
    """One pass over the cache collecting :class:`UnitRows` for ``units``.

    Parameters
    ----------
    cache
        Open cache.
    encode
        ``x_nd -> acts_nk`` (e.g. ``SaeUnits.encode``).
    units
        Unit indices to collect.
    rows_n
        Cache rows to consider (default all).
    n_top, n_inactive
        How many top rows and random inactive rows to keep per unit.
    seed
        Seeds the random inactive sample.
    """
    units_u = np.asarray(units, np.int64)
    n_all = len(cache)
    rows_n = np.arange(n_all) if rows_n is None else np.asarray(rows_n, np.int64)
    u = units_u.size
    top_v = np.full((0, u), -np.inf, np.float32)
    top_r = np.full((0, u), -1, np.int64)
    rnd_v = np.full((0, u), -np.inf, np.float32)
    rnd_r = np.full((0, u), -1, np.int64)
    n_active = np.zeros(u, np.int64)
    lo = np.full(u, np.inf, np.float32)
    hi = np.full(u, -np.inf, np.float32)
    # One random priority per image, shared by all units: keeping the rows with the largest
    # priority among a unit's inactive rows is a uniform sample of them.
    prio_n = np.random.default_rng(seed).random(rows_n.size).astype(np.float32)
    done = 0
    for start, emb_bd in iter_rows(cache, rows_n, chunk_rows):
        b = emb_bd.shape[0]
        acts_bu = np.asarray(encode(emb_bd), np.float32)[:, units_u]  # type: ignore[operator]
        rows_b = rows_n[start:start + b]
        top_v, top_r = _merge_top(top_v, top_r, acts_bu, rows_b, n_top)
        inactive = acts_bu <= active_eps
        pr_bu = np.where(inactive, prio_n[start:start + b, None], -np.inf).astype(np.float32)
        rnd_v, rnd_r = _merge_top(rnd_v, rnd_r, pr_bu, rows_b, n_inactive)
        n_active += (~inactive).sum(axis=0)
        np.minimum(lo, acts_bu.min(axis=0), out=lo)
        np.maximum(hi, acts_bu.max(axis=0), out=hi)
        done += b
        yield Progress(done, rows_n.size, f"finding top images: {done}/{rows_n.size}")
    order = np.argsort(-top_v, axis=0, kind="stable")
    top_v = np.take_along_axis(top_v, order, axis=0)
    top_r = np.take_along_axis(top_r, order, axis=0)
    top_r = np.where(np.isfinite(top_v), top_r, -1)
    rnd_r = np.where(np.isfinite(rnd_v), rnd_r, -1)
    return UnitRows(units=units_u, top_rows_um=top_r.T.copy(), top_vals_um=top_v.T.copy(),
                    n_active_u=n_active, var_ok_u=hi > lo, inactive_rows_ur=rnd_r.T.copy())


def naming_rows(rows: UnitRows, unit: int, *, each_end: int = NAMING_EACH_END,
                seed: int = 0) -> np.ndarray:
    """The official naming images of ``unit``: first and last ``each_end`` of the top list.

    The top list is the (up to 100) strongest activations truncated to ``l0 − l0 // 3`` (the
    top two-thirds of the active images); the pick is shuffled with ``seed``.
    """
    i = rows.index(unit)
    l0 = int(rows.n_active_u[i])
    top = rows.top_rows_um[i]
    top = top[top >= 0]
    top = top[: max(0, min(top.size, l0 - l0 // 3))]
    if top.size > 2 * each_end:
        pick = np.concatenate([top[:each_end], top[-each_end:]])
    else:
        pick = top
    return np.random.default_rng([seed, unit]).permutation(pick)


def scoring_rows(rows: UnitRows, unit: int, *, per_side: int = SCORING_PER_SIDE,
                 seed: int = 42, active_eps: float = ACTIVE_EPS
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The official naming-evaluation images of ``unit`` and their ground truth.

    Returns
    -------
    rows_i, target_i
        Up to ``2 * per_side`` cache rows, shuffled, and 1 where the unit is active (a top row
        of a unit active on fewer than ``per_side`` images can be inactive: target 0).
    """
    i = rows.index(unit)
    top_r = rows.top_rows_um[i][:per_side]
    top_v = rows.top_vals_um[i][:per_side]
    keep = top_r >= 0
    top_r, top_v = top_r[keep], top_v[keep]
    neg = rows.inactive_rows_ur[i]
    neg = neg[(neg >= 0) & ~np.isin(neg, top_r)][:per_side]
    rows_i = np.concatenate([top_r, neg])
    target_i = np.concatenate([(top_v > active_eps).astype(np.int64),
                               np.zeros(neg.size, np.int64)])
    perm = np.random.default_rng([seed, unit]).permutation(rows_i.size)
    return rows_i[perm], target_i[perm]
