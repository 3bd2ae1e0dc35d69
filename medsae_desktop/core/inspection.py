"""Top SAE features of one image, their population percentiles and heat-map overlays.

This is the one implementation of "what the viewer shows", used by the desktop viewer and by
``medsae inspect`` alike, so both give the same features, values and overlay pixels for the
same inputs.

Pipeline for one image (DESIGN.md §5.1, reference models_and_dicom.md §3):

1. the encoder embeds the default 8-bit render ``render_hw`` with per-location embeddings
   (``patches_pd``: P = 7 x 7 cells, each divided by the same norm as the global embedding,
   so the mean over cells is the embedding);
2. the SAE's activations of the global embedding rank the units (top-N by activation);
3. a unit's *contribution map* is its affine pre-activation applied to each cell,
   ``pre_activations(patches_pd)[:, k]`` reshaped 7 x 7. The mean over cells equals the global
   pre-activation exactly (the SAE encoder is affine), so the map is an additive
   decomposition of the unit's input. The nonlinearity (ReLU/TopK/threshold) applies only to
   the global value: the map shows where the evidence comes from, not a per-cell activation;
4. the 7 x 7 map is upsampled bilinearly (half-pixel centres) to the padded square the
   encoder saw (side ``max(224, w, h)``), cropped back to the image (undoing the letterbox) and
   masked (NaN) on DICOM padding pixels;
5. overlays: each map is scaled from ``vmin`` to ``vmax``: ``vmax`` its maximum over the
   image, ``vmin`` its minimum clipped to ``[0, vmax / 2]`` (a map that is positive everywhere
   is shown relative to its own floor, so the image is not covered uniformly; a nearly flat
   map keeps a floor at half its maximum, so its weak spatial contrast is not exaggerated).
   Alpha is 0 below a quarter of that range and rises to full opacity at three quarters
   (:func:`alpha_ramp`), so only where the evidence concentrates is coloured and elsewhere the
   radiograph stays unaltered. The colour bar shows ``vmin .. vmax``.

Population percentile of unit k for an image = 100 x (fraction of the cache's images whose
activation of k is strictly lower). It is computed from :class:`PopulationStats`: per-unit
quantiles of the positive activations over the cache plus the count of zeros, built once per
(SAE, cache) by :func:`population_job` and kept in the per-user cache folder.

No Qt, no torch (encoders are passed in), no printing.
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medsae_desktop import __version__
from medsae_desktop.core.annotations import FeatureName, display_name
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import Progress

logger = logging.getLogger(__name__)

POPULATION_SCHEMA_VERSION = 1
#: quantile levels kept per unit (over its positive activations)
N_QUANTILES = 257
#: top-activating cache rows kept per unit (gallery)
TOP_M = 24
#: default colour map of single-feature overlays
DEFAULT_CMAP = "inferno"
#: default overlay opacity
DEFAULT_OPACITY = 0.6
#: colours of the features when several overlays are shown at once (RGB, distinguishable
#: on a grayscale radiograph; no grey, no near-white)
FEATURE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 96, 64),    # vermilion
    (64, 200, 255),   # sky
    (120, 230, 80),   # green
    (255, 200, 40),   # amber
    (220, 100, 255),  # violet
    (255, 110, 190),  # pink
    (40, 230, 200),   # teal
    (170, 140, 255),  # lavender
)


class _Image(Protocol):
    render_hw: np.ndarray
    padding_mask_hw: np.ndarray | None


# ----------------------------------------------------------------------------------------------
# Population statistics
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PopulationStats:
    """Per-unit activation distribution over an embedding cache.

    Attributes
    ----------
    sae_id
        The SAE the activations come from.
    cache_fingerprint
        Identity of the cache (see :func:`cache_fingerprint`).
    n_images
        N, the population size.
    n_pos_s
        int64 (S,): images on which each unit is active (> 0).
    pos_quantiles_qs
        float32 (Q, S): quantiles of each unit's positive activations at ``levels_q``;
        NaN columns for units never active.
    levels_q
        float64 (Q,): quantile levels in [0, 1].
    mean_s, max_s
        float32 (S,): mean (over all N, zeros included) and max activation.
    top_rows_sm, top_vals_sm
        int64 / float32 (S, M): cache rows of each unit's strongest activations, strongest
        first (rows with zero activation are -1).
    label_names
        Label columns of the cache (may be empty).
    corr_sc
        float32 (S, C): Pearson correlation of each unit with each label (NaN → 0, constant
        columns → 0, as DESIGN.md §5.3); shape (S, 0) without labels.
    """

    sae_id: str
    cache_fingerprint: str
    n_images: int
    n_pos_s: np.ndarray
    pos_quantiles_qs: np.ndarray
    levels_q: np.ndarray
    mean_s: np.ndarray
    max_s: np.ndarray
    top_rows_sm: np.ndarray
    top_vals_sm: np.ndarray
    label_names: tuple[str, ...] = ()
    corr_sc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.float32))

    @property
    def d_sae(self) -> int:
        """Number of units S."""
        return int(self.n_pos_s.shape[0])

    @property
    def frequency_s(self) -> np.ndarray:
        """Fraction of images on which each unit is active, float64 (S,)."""
        return self.n_pos_s / max(self.n_images, 1)

    def percentile(self, unit: int, value: float) -> float:
        """Percent of the population whose activation of ``unit`` is strictly below ``value``."""
        return float(self.percentiles(np.array([unit]), np.array([value]))[0])

    def percentiles(self, units_f: np.ndarray, values_f: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`percentile` over pairs (units_f[i], values_f[i]), float64 (F,)."""
        out = np.zeros(len(units_f), np.float64)
        n = max(self.n_images, 1)
        for i, (k, v) in enumerate(zip(np.asarray(units_f), np.asarray(values_f), strict=True)):
            k = int(k)
            v = float(v)
            n_pos = int(self.n_pos_s[k])
            n_zero = self.n_images - n_pos
            if v <= 0 or n_pos == 0:
                out[i] = 0.0 if v <= 0 else 100.0
                continue
            q = self.pos_quantiles_qs[:, k]
            # quantile level of v, linear between the stored quantiles
            j = int(np.searchsorted(q, v, side="left"))
            if j == 0:
                frac = 0.0
            elif j < len(q):
                lo, hi = float(q[j - 1]), float(q[j])
                t = 0.0 if hi <= lo else (v - lo) / (hi - lo)
                frac = float(self.levels_q[j - 1] + t * (self.levels_q[j] - self.levels_q[j - 1]))
            else:
                frac = 1.0
            # the quantile function runs through the sorted values at ranks 0 .. n_pos - 1:
            # a value at level ``frac`` has ``frac * (n_pos - 1)`` values strictly below it
            below = n_pos if v > q[-1] else frac * (n_pos - 1)
            out[i] = 100.0 * (n_zero + below) / n
        return out

    def histogram(self, unit: int, bins: int = 40) -> tuple[np.ndarray, np.ndarray, int]:
        """Approximate histogram of ``unit``'s positive activations from its quantiles.

        Returns
        -------
        edges_b1, counts_b, n_zero
            Bin edges (bins + 1), image counts per bin (float, sum = active images), and the
            number of images where the unit is inactive.
        """
        n_pos = int(self.n_pos_s[unit])
        n_zero = self.n_images - n_pos
        if n_pos == 0:
            return np.linspace(0, 1, bins + 1), np.zeros(bins), n_zero
        q = self.pos_quantiles_qs[:, unit].astype(np.float64)
        lo, hi = 0.0, float(max(q[-1], 1e-12))
        edges = np.linspace(lo, hi, bins + 1)
        # CDF at the edges by inverting the quantile table (piecewise linear)
        cdf = np.interp(edges, q, self.levels_q, left=0.0, right=1.0)
        cdf[-1] = 1.0
        return edges, np.diff(cdf) * n_pos, n_zero

    # ---- persistence (npz, no pickle) -----------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as ``.npz`` (atomic)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"schema_version": POPULATION_SCHEMA_VERSION, "sae_id": self.sae_id,
                "cache_fingerprint": self.cache_fingerprint, "n_images": self.n_images,
                "label_names": list(self.label_names),
                "created_by": f"medsae-desktop {__version__}"}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp, meta=np.array(json.dumps(meta)), n_pos_s=self.n_pos_s,
            pos_quantiles_qs=self.pos_quantiles_qs, levels_q=self.levels_q,
            mean_s=self.mean_s, max_s=self.max_s, top_rows_sm=self.top_rows_sm,
            top_vals_sm=self.top_vals_sm, corr_sc=self.corr_sc)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PopulationStats":
        """Read a file written by :meth:`save`; MedsaeError if unreadable or too new."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise MedsaeError(f"unreadable population statistics ({exc})", path) from exc
        if int(meta.get("schema_version", 0)) != POPULATION_SCHEMA_VERSION:
            raise MedsaeError("population statistics of another schema version", path)
        return cls(sae_id=meta["sae_id"], cache_fingerprint=meta["cache_fingerprint"],
                   n_images=int(meta["n_images"]), label_names=tuple(meta["label_names"]),
                   **arrays)


def cache_fingerprint(cache: Any) -> str:
    """Identity of an :class:`~medsae_desktop.core.cache.EmbeddingCache`'s contents.

    sha256 over the encoder description and the image ids in row order: a moved or copied
    cache keeps its fingerprint, an appended one gets a new one.
    """
    h = hashlib.sha256()
    h.update(json.dumps(cache.encoder, sort_keys=True).encode())
    h.update(f"|{len(cache)}|{cache.embedding_dim}|".encode())
    for key in cache.ids:
        h.update(str(key).encode())
        h.update(b"\n")
    return h.hexdigest()


def population_path(sae_id: str, fingerprint: str) -> Path:
    """Where the statistics of (SAE, cache) are kept: the per-user cache folder."""
    import platformdirs

    base = Path(platformdirs.user_cache_dir("medsae-desktop")) / "population"
    return base / f"{sae_id[:16]}-{fingerprint[:16]}.npz"


def population_job(
    cache_path: str | os.PathLike[str],
    sae: Any,
    *,
    chunk_rows: int = 1024,
    out_path: str | os.PathLike[str] | None = None,
    reuse: bool = True,
) -> Generator[Progress, None, PopulationStats]:
    """Compute (or reuse) the activation statistics of ``sae`` over a cache.

    Parameters
    ----------
    cache_path
        HDF5 embedding cache (its ``/embeddings`` are what the SAE encodes).
    sae
        A loaded :class:`~medsae_desktop.core.sae.SAE`.
    chunk_rows
        Rows read and encoded at a time (memory: chunk_rows x d_sae floats).
    out_path
        Where to save; default :func:`population_path`.
    reuse
        Load a saved file for the same SAE and cache instead of recomputing.

    Yields
    ------
    Progress
        Rows processed.

    Returns
    -------
    PopulationStats
    """
    from medsae_desktop.core.cache import EmbeddingCache

    with EmbeddingCache(cache_path) as cache:
        if cache.embedding_dim != sae.d_in:
            raise MedsaeError(f"cache holds {cache.embedding_dim}-d embeddings but the SAE "
                              f"expects {sae.d_in}-d", cache_path)
        fp = cache_fingerprint(cache)
        target = Path(out_path) if out_path is not None else population_path(sae.sae_id, fp)
        if reuse and target.is_file():
            try:
                stats = PopulationStats.load(target)
                if stats.sae_id == sae.sae_id and stats.cache_fingerprint == fp:
                    yield Progress(len(cache), len(cache), "population statistics reused")
                    return stats
            except MedsaeError:
                logger.warning("recomputing unreadable population statistics %s", target)
        n, s = len(cache), sae.d_sae
        labels = cache.label_names
        c = len(labels)
        m = min(TOP_M, max(n, 1))
        sum_s = np.zeros(s, np.float64)
        sumsq_s = np.zeros(s, np.float64)
        n_pos_s = np.zeros(s, np.int64)
        max_s = np.zeros(s, np.float32)
        top_vals_sm = np.full((s, m), -np.inf, np.float32)
        top_rows_sm = np.full((s, m), -1, np.int64)
        sum_y = np.zeros(c, np.float64)
        sumsq_y = np.zeros(c, np.float64)
        sum_ay = np.zeros((s, c), np.float64)
        pos_units: list[np.ndarray] = []
        pos_vals: list[np.ndarray] = []
        yield Progress(0, n, "activations over the cache")
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            acts_ns = sae.encode(cache.read_embeddings(start, stop))
            sum_s += acts_ns.sum(0, dtype=np.float64)
            sumsq_s += np.square(acts_ns, dtype=np.float64).sum(0)
            pos_ns = acts_ns > 0
            n_pos_s += pos_ns.sum(0)
            np.maximum(max_s, acts_ns.max(0), out=max_s)
            # positive values grouped by unit: nonzero of the transpose is in unit order
            units_i, rows_i = np.nonzero(pos_ns.T)
            pos_units.append(units_i.astype(np.int32))
            pos_vals.append(acts_ns[rows_i, units_i].astype(np.float32))
            # running top-M per unit: the chunk's own top-M first, then merge
            mm = min(m, stop - start)
            part_ms = np.argpartition(-acts_ns, mm - 1, axis=0)[:mm]
            cand_vals = np.concatenate(
                [top_vals_sm, np.take_along_axis(acts_ns, part_ms, axis=0).T], axis=1)
            cand_rows = np.concatenate([top_rows_sm, (part_ms + start).T], axis=1)
            keep = np.argsort(-cand_vals, axis=1, kind="stable")[:, :m]
            top_vals_sm = np.take_along_axis(cand_vals, keep, axis=1)
            top_rows_sm = np.take_along_axis(cand_rows, keep, axis=1)
            if c:
                y_nc = np.nan_to_num(cache.read_labels(start, stop), nan=0.0).astype(np.float64)
                sum_y += y_nc.sum(0)
                sumsq_y += np.square(y_nc).sum(0)
                sum_ay += acts_ns.T.astype(np.float64) @ y_nc
            yield Progress(stop, n, f"activations {stop}/{n}")
        top_rows_sm = np.where(top_vals_sm > 0, top_rows_sm, -1)
        top_vals_sm = np.where(top_vals_sm > 0, top_vals_sm, 0.0).astype(np.float32)
        levels_q = np.linspace(0.0, 1.0, N_QUANTILES)
        quant_qs = _grouped_quantiles(
            np.concatenate(pos_units) if pos_units else np.zeros(0, np.int32),
            np.concatenate(pos_vals) if pos_vals else np.zeros(0, np.float32), s, levels_q)
        corr_sc = _pearson(n, sum_s, sumsq_s, sum_y, sumsq_y, sum_ay)
        stats = PopulationStats(
            sae_id=sae.sae_id, cache_fingerprint=fp, n_images=n, n_pos_s=n_pos_s,
            pos_quantiles_qs=quant_qs, levels_q=levels_q,
            mean_s=(sum_s / max(n, 1)).astype(np.float32), max_s=max_s,
            top_rows_sm=top_rows_sm, top_vals_sm=top_vals_sm, label_names=tuple(labels),
            corr_sc=corr_sc)
        try:
            stats.save(target)
        except OSError as exc:  # read-only cache folder: the statistics still work in memory
            logger.warning("could not save population statistics to %s: %s", target, exc)
        return stats


def _grouped_quantiles(units_i: np.ndarray, vals_i: np.ndarray, s: int,
                       levels_q: np.ndarray) -> np.ndarray:
    """Per-unit quantiles of values grouped by unit id, float32 (Q, S); NaN for empty units."""
    order = np.lexsort((vals_i, units_i))
    units_i, vals_i = units_i[order], vals_i[order]
    counts_s = np.bincount(units_i, minlength=s)
    starts_s = np.concatenate([[0], np.cumsum(counts_s)[:-1]])
    out = np.full((len(levels_q), s), np.nan, np.float32)
    has = counts_s > 0
    if not has.any():
        return out
    pos = levels_q[:, None] * (counts_s[has] - 1)[None, :]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, (counts_s[has] - 1)[None, :])
    t = (pos - lo).astype(np.float32)
    base = starts_s[has][None, :]
    v_lo, v_hi = vals_i[base + lo], vals_i[base + hi]
    out[:, has] = v_lo + t * (v_hi - v_lo)
    return out


def _pearson(n: int, sum_a: np.ndarray, sumsq_a: np.ndarray, sum_y: np.ndarray,
             sumsq_y: np.ndarray, sum_ay: np.ndarray) -> np.ndarray:
    """Pearson ρ (S, C) from streaming sums; constant columns give 0 (DESIGN.md §5.3)."""
    if sum_y.size == 0 or n < 2:
        return np.zeros((sum_a.shape[0], sum_y.shape[0]), np.float32)
    cov = sum_ay - np.outer(sum_a, sum_y) / n
    var_a = np.maximum(sumsq_a - sum_a ** 2 / n, 0.0)
    var_y = np.maximum(sumsq_y - sum_y ** 2 / n, 0.0)
    denom = np.sqrt(np.outer(var_a, var_y))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 1e-12, cov / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(rho, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FeatureHit:
    """One feature of an image: what the viewer's list and ``medsae inspect`` show.

    Attributes
    ----------
    unit
        SAE unit index.
    name
        Display name (annotated, else proposed, else ``unnamed #k``).
    activation
        The unit's activation on the image.
    percentile
        Percent of the population with a strictly lower activation (None without one).
    status
        Annotation status, or ``""`` when the unit has no name.
    """

    unit: int
    name: str
    activation: float
    percentile: float | None
    status: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON dict."""
        return {"unit": self.unit, "name": self.name, "activation": self.activation,
                "percentile": self.percentile, "status": self.status}


@dataclasses.dataclass(frozen=True)
class Inspection:
    """Everything the viewer needs about one image under one encoder + SAE.

    Attributes
    ----------
    image_hw
        (rows, columns) of the image.
    sae_id
        The SAE used.
    encoder
        The encoder's ``info.to_json()``.
    acts_s
        float32 (S,): activations of the global embedding.
    pre_ps
        float32 (P, S): per-cell pre-activations (contribution maps of every unit).
    grid
        (rows, cols) of the cell grid, P = rows x cols.
    top
        The top-N features, strongest first.
    """

    image_hw: tuple[int, int]
    sae_id: str
    encoder: Mapping[str, Any]
    acts_s: np.ndarray
    pre_ps: np.ndarray
    grid: tuple[int, int]
    top: tuple[FeatureHit, ...]

    def map_77(self, unit: int) -> np.ndarray:
        """Contribution map of ``unit`` on the cell grid, float32 (rows, cols)."""
        return self.pre_ps[:, int(unit)].reshape(self.grid)

    def hit(self, unit: int, population: PopulationStats | None = None,
            names: Mapping[int, FeatureName] | None = None) -> FeatureHit:
        """A :class:`FeatureHit` for any unit (not only the top ones)."""
        return _hit(int(unit), float(self.acts_s[int(unit)]), population, names)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON summary (``medsae inspect --json``)."""
        return {"image_size": list(self.image_hw), "sae_id": self.sae_id,
                "encoder": dict(self.encoder), "n_active": int((self.acts_s > 0).sum()),
                "features": [h.to_json() for h in self.top]}


def _hit(unit: int, act: float, population: PopulationStats | None,
         names: Mapping[int, FeatureName] | None) -> FeatureHit:
    nm = None if names is None else names.get(unit)
    pct = None if population is None else population.percentile(unit, act)
    return FeatureHit(unit=unit, name=display_name(nm, unit), activation=act, percentile=pct,
                      status="" if nm is None else nm.status)


def top_hits(acts_s: np.ndarray, top_n: int, *, population: PopulationStats | None = None,
             names: Mapping[int, FeatureName] | None = None) -> tuple[FeatureHit, ...]:
    """The ``top_n`` most active units (active ones only), strongest first; ties by unit."""
    order = np.argsort(-np.asarray(acts_s), kind="stable")
    active = [int(k) for k in order[: max(0, int(top_n))] if acts_s[k] > 0]
    return tuple(_hit(k, float(acts_s[k]), population, names) for k in active)


def default_overlay_units(top: Sequence[FeatureHit]) -> list[int]:
    """Overlays shown when a study opens: the strongest feature, plus the strongest *named*
    one when the strongest has no name (so a study always opens with a named overlay when
    one of its top features is named). Used by the viewer and ``medsae inspect``."""
    if not top:
        return []
    units = [top[0].unit]
    if top[0].status in ("", "rejected"):
        named = next((h for h in top if h.status not in ("", "rejected")), None)
        if named is not None:
            units.append(named.unit)
    return units


def inspect_embedding(
    embedding_d: np.ndarray,
    patches_pd: np.ndarray,
    sae: Any,
    *,
    image_hw: tuple[int, int],
    encoder: Mapping[str, Any],
    grid: tuple[int, int] = (7, 7),
    population: PopulationStats | None = None,
    names: Mapping[int, FeatureName] | None = None,
    top_n: int = 10,
) -> Inspection:
    """Rank an embedded image's features (step 2-3 of the module docstring)."""
    if population is not None and population.sae_id != sae.sae_id:
        raise MedsaeError("population statistics belong to another SAE")
    acts_s = sae.encode(np.asarray(embedding_d, np.float32)[None])[0]
    pre_ps = sae.pre_activations(np.asarray(patches_pd, np.float32))
    assert pre_ps.shape == (grid[0] * grid[1], sae.d_sae), f"bad patch grid {pre_ps.shape}"
    top = top_hits(acts_s, top_n, population=population, names=names)
    return Inspection(image_hw=(int(image_hw[0]), int(image_hw[1])), sae_id=sae.sae_id,
                      encoder=dict(encoder), acts_s=acts_s, pre_ps=pre_ps,
                      grid=(int(grid[0]), int(grid[1])), top=top)


def inspect_image(
    image: _Image,
    encoder: Any,
    sae: Any,
    *,
    population: PopulationStats | None = None,
    names: Mapping[int, FeatureName] | None = None,
    top_n: int = 10,
) -> Inspection:
    """Embed ``image.render_hw`` with ``encoder`` and rank the SAE's features.

    Parameters
    ----------
    image
        A :class:`~medsae_desktop.core.images.LoadedImage` (its default render is what the
        encoder sees, DESIGN.md §5.1).
    encoder
        An :class:`~medsae_desktop.core.encoders.ImageEncoder`.
    sae
        A loaded :class:`~medsae_desktop.core.sae.SAE`.
    population
        Statistics of the same SAE over a cache, for percentiles.
    names
        Unit → current name (annotation store), for display names.
    top_n
        How many features to return (only active ones are listed).
    """
    res = encoder.encode_renders([image.render_hw], patches=True)
    if res.patches_bpd is None:
        raise MedsaeError("the encoder gave no per-location embeddings")
    if res.embeddings_bd.shape[1] != sae.d_in:
        raise MedsaeError(f"encoder gives {res.embeddings_bd.shape[1]}-d embeddings but the "
                          f"SAE expects {sae.d_in}-d")
    info = encoder.info
    return inspect_embedding(res.embeddings_bd[0], res.patches_bpd[0], sae,
                             image_hw=image.render_hw.shape, encoder=info.to_json(),
                             grid=tuple(info.grid), population=population, names=names,
                             top_n=top_n)


# ----------------------------------------------------------------------------------------------
# Heat maps and overlays
# ----------------------------------------------------------------------------------------------
def _interp_matrix(pos_o: np.ndarray, side: int, n_cells: int) -> np.ndarray:
    """Bilinear weights (O, n_cells) at (fractional) pixel positions ``pos_o`` of a
    ``side``-pixel axis covered by ``n_cells`` cells: half-pixel centres, edges clamped (the
    convention of ``torch.nn.functional.interpolate(..., align_corners=False)``)."""
    x = (np.asarray(pos_o, np.float64) + 0.5) * (n_cells / side) - 0.5
    x = np.clip(x, 0.0, n_cells - 1.0)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_cells - 1)
    t = x - i0
    m = np.zeros((len(x), n_cells), np.float64)
    rows = np.arange(len(x))
    np.add.at(m, (rows, i0), 1.0 - t)
    np.add.at(m, (rows, i1), t)
    return m


def upsample_map(map_gg: np.ndarray, image_hw: tuple[int, int],
                 padding_mask_hw: np.ndarray | None = None,
                 out_hw: tuple[int, int] | None = None, step: int = 1) -> np.ndarray:
    """A cell-grid map at image resolution (step 4 of the module docstring).

    Parameters
    ----------
    map_gg
        (rows, cols) map over the letterboxed square the encoder saw.
    image_hw
        (rows, columns) of the original image (defines the letterbox geometry).
    padding_mask_hw
        True on DICOM padding pixels (NaN in the result); must have ``out_hw``'s shape when
        that is given.
    out_hw
        Sample the map on this grid over the image instead (thumbnails): output pixel
        ``(i, j)`` is image position ``((i + 0.5) * rows / out_rows - 0.5, ...)``.
    step
        Sample one value per ``step x step`` block of image pixels (at the block centre):
        the overlay grid of large images (see :func:`overlay_step`). The padding mask is
        sampled the same way. Ignored when ``out_hw`` is given.

    Returns
    -------
    np.ndarray
        float32 (rows, columns) or ``out_hw``; NaN on padding.
    """
    from medsae_desktop.core.encoders.preprocessing import letterbox_geometry

    h, w = int(image_hw[0]), int(image_hw[1])
    side, off_x, off_y = letterbox_geometry(h, w)
    gr, gc = map_gg.shape
    if out_hw is None:
        ys = np.arange(0, h, step, dtype=np.float64)
        xs = np.arange(0, w, step, dtype=np.float64)
        if step > 1:
            ys = np.minimum(ys + (step - 1) / 2, h - 1)
            xs = np.minimum(xs + (step - 1) / 2, w - 1)
            if padding_mask_hw is not None:
                c = (step - 1) // 2
                m = np.asarray(padding_mask_hw, bool)
                padding_mask_hw = m[np.minimum(np.arange(0, h, step) + c, h - 1)][
                    :, np.minimum(np.arange(0, w, step) + c, w - 1)]
    else:
        oh, ow = int(out_hw[0]), int(out_hw[1])
        ys = (np.arange(oh) + 0.5) * (h / oh) - 0.5
        xs = (np.arange(ow) + 0.5) * (w / ow) - 0.5
    ry = _interp_matrix(ys + off_y, side, gr)
    rx = _interp_matrix(xs + off_x, side, gc)
    out = (ry @ np.asarray(map_gg, np.float64) @ rx.T).astype(np.float32)
    if padding_mask_hw is not None:
        out[np.asarray(padding_mask_hw, bool)] = np.nan
    return out


#: overlays of images larger than this (pixels, longest side) are computed on a coarser grid
OVERLAY_MAX_SIDE = 1024


def overlay_step(image_hw: tuple[int, int]) -> int:
    """Block size of the overlay grid: 1 up to :data:`OVERLAY_MAX_SIDE`, 2 for a 2k image.

    A contribution map is a bilinear interpolation of 7 x 7 values, so sampling it once per
    2 x 2 block loses nothing visible while quartering the work (RG1: 1.1 s → 0.3 s for two
    overlays on this machine); only the padding edge is placed to within ``step`` pixels.
    """
    return max(1, math.ceil(max(int(image_hw[0]), int(image_hw[1])) / OVERLAY_MAX_SIDE))


def expand_overlay(rgba_hw4: np.ndarray | None, image_hw: tuple[int, int]) -> np.ndarray | None:
    """An overlay from the coarse grid to full image size (each value fills its block)."""
    if rgba_hw4 is None:
        return None
    h, w = int(image_hw[0]), int(image_hw[1])
    step = overlay_step((h, w))
    if step == 1:
        return rgba_hw4
    return np.repeat(np.repeat(rgba_hw4, step, axis=0), step, axis=1)[:h, :w]


def heatmap(inspection: Inspection, unit: int, image: _Image, step: int = 1) -> np.ndarray:
    """Contribution map of ``unit`` on ``image`` (one value per ``step`` block), NaN on
    padding."""
    return upsample_map(inspection.map_77(unit), inspection.image_hw, image.padding_mask_hw,
                        step=step)


def colormap_lut(name: str) -> np.ndarray:
    """A matplotlib colour map as a uint8 (256, 3) table."""
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError as exc:
        raise MedsaeError(f"unknown colour map {name!r}") from exc
    return (np.asarray(cmap(np.linspace(0, 1, 256)))[:, :3] * 255 + 0.5).astype(np.uint8)


def solid_lut(rgb: Sequence[int]) -> np.ndarray:
    """A one-colour table (256, 3): the colour of one feature among several."""
    return np.tile(np.asarray(rgb, np.uint8)[None, :], (256, 1))


def feature_luts(n: int, cmap: str = DEFAULT_CMAP) -> list[np.ndarray]:
    """Tables for ``n`` simultaneous overlays: the colour map for one, distinct colours
    (:data:`FEATURE_COLOURS`) for several."""
    if n <= 1:
        return [colormap_lut(cmap)]
    return [solid_lut(FEATURE_COLOURS[i % len(FEATURE_COLOURS)]) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class OverlayLayer:
    """One coloured overlay: an RGBA image and the value range of its colour bar."""

    unit: int
    rgba_hw4: np.ndarray
    vmax: float
    lut: np.ndarray
    vmin: float = 0.0


#: alpha ramp of the overlays over the scaled value t in [0, 1] (see module docstring)
ALPHA_LOW, ALPHA_HIGH = 0.25, 0.75


def alpha_ramp(t: np.ndarray) -> np.ndarray:
    """Overlay alpha (before opacity) for scaled values ``t`` in [0, 1]."""
    return np.clip((np.asarray(t, np.float32) - ALPHA_LOW) / (ALPHA_HIGH - ALPHA_LOW), 0.0, 1.0)


def map_range(heat_hw: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) of a contribution map for display (module docstring, step 5)."""
    finite = heat_hw[np.isfinite(heat_hw)]
    if finite.size == 0:
        return 0.0, 1.0
    vmax = float(finite.max())
    if vmax <= 0:
        return 0.0, 1.0
    vmin = float(np.clip(finite.min(), 0.0, vmax / 2))
    return vmin, vmax


def overlay_layer(heat_hw: np.ndarray, lut: np.ndarray, *, unit: int = -1,
                  opacity: float = DEFAULT_OPACITY,
                  vrange: tuple[float, float] | None = None) -> OverlayLayer:
    """Colour a contribution map (step 5 of the module docstring).

    Parameters
    ----------
    heat_hw
        Full-resolution map (NaN = padding).
    lut
        uint8 (256, 3) colour table.
    opacity
        Alpha where the ramp is full.
    vrange
        (vmin, vmax) mapped to the ends of the table; default :func:`map_range`.

    Returns
    -------
    OverlayLayer
        RGBA uint8 (rows, columns, 4), not premultiplied; transparent on padding.
    """
    heat = np.asarray(heat_hw, np.float32)
    vmin, vmax = map_range(heat) if vrange is None else (float(vrange[0]), float(vrange[1]))
    span = vmax - vmin if vmax > vmin else 1.0
    # quantise to the 256 table entries first; colour and alpha then come from one RGBA
    # table lookup (alpha_ramp of the entry's t), a single gather per pixel
    t_q = np.subtract(heat, np.float32(vmin))
    t_q *= np.float32(255.0 / span)
    t_q += np.float32(0.5)
    np.clip(t_q, 0.0, 255.0, out=t_q)
    nan = np.isnan(t_q)
    t_q[nan] = 0.0
    idx = t_q.astype(np.uint8)
    table = np.empty((256, 4), np.uint8)
    table[:, :3] = lut
    table[:, 3] = (alpha_ramp(np.arange(256) / 255.0) * float(np.clip(opacity, 0.0, 1.0))
                   * 255 + 0.5).astype(np.uint8)
    rgba = table.view(np.uint32)[:, 0][idx].view(np.uint8).reshape(heat.shape + (4,))
    if nan.any():
        rgba[nan, 3] = 0
    return OverlayLayer(unit=unit, rgba_hw4=rgba, vmax=vmax, lut=lut, vmin=vmin)


def merge_layers(layers: Sequence[np.ndarray]) -> np.ndarray | None:
    """Porter-Duff "over" of RGBA layers (first at the bottom) into one RGBA uint8 image.

    Drawing the result over a background equals drawing the layers one by one.
    """
    if not layers:
        return None
    if len(layers) == 1:
        return layers[0]
    c = np.zeros(layers[0].shape[:2] + (3,), np.float32)  # premultiplied colour
    a = np.zeros(layers[0].shape[:2], np.float32)
    for lay in layers:
        la = lay[..., 3].astype(np.float32)
        la *= np.float32(1 / 255)
        keep = np.float32(1) - la
        c *= keep[..., None]
        c += lay[..., :3] * la[..., None]
        a *= keep
        a += la
    out = np.empty(layers[0].shape, np.uint8)
    inv = np.divide(np.float32(1), a, out=np.zeros_like(a), where=a > 0)
    c *= inv[..., None]
    c += np.float32(0.5)
    np.clip(c, 0, 255, out=c)
    out[..., :3] = c
    a *= np.float32(255)
    a += np.float32(0.5)
    np.clip(a, 0, 255, out=a)
    out[..., 3] = a
    return out


def composite(gray_hw: np.ndarray, rgba_hw4: np.ndarray | None) -> np.ndarray:
    """Draw an RGBA overlay over an 8-bit grayscale image; uint8 (rows, columns, 3)."""
    g = np.asarray(gray_hw, np.uint8)
    base = np.repeat(g[..., None], 3, axis=2).astype(np.float32)
    if rgba_hw4 is None:
        return base.astype(np.uint8)
    a = rgba_hw4[..., 3:4].astype(np.float32) / 255
    out = rgba_hw4[..., :3].astype(np.float32) * a + base * (1 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def scale_alpha(rgba_hw4: np.ndarray | None, opacity: float) -> np.ndarray | None:
    """The overlay drawn at ``opacity``: alpha multiplied by it (colours unchanged)."""
    if rgba_hw4 is None:
        return None
    out = rgba_hw4.copy()
    out[..., 3] = (rgba_hw4[..., 3].astype(np.float32) * float(np.clip(opacity, 0, 1))
                   + 0.5).astype(np.uint8)
    return out


def overlay_for(inspection: Inspection, image: _Image, units: Sequence[int], *,
                cmap: str = DEFAULT_CMAP, opacity: float = DEFAULT_OPACITY
                ) -> tuple[list[OverlayLayer], np.ndarray | None]:
    """Layers and their merged RGBA for ``units`` (the viewer's and ``inspect``'s overlay).

    Layers are coloured at full opacity and merged ("over", first unit at the bottom); the
    merged overlay's alpha is then scaled by ``opacity`` (one opacity for the whole overlay,
    which is how the viewer's opacity slider acts on the displayed layer). The result is on
    the overlay grid (:func:`overlay_step`); :func:`expand_overlay` brings it to image size.
    """
    luts = feature_luts(len(units), cmap)
    step = overlay_step(inspection.image_hw)
    layers = [overlay_layer(heatmap(inspection, u, image, step), lut, unit=int(u), opacity=1.0)
              for u, lut in zip(units, luts, strict=True)]
    merged = merge_layers([lay.rgba_hw4 for lay in layers])
    return layers, scale_alpha(merged, opacity)


# ----------------------------------------------------------------------------------------------
# Galleries (the annotator's top-activating images of one unit)
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GalleryItem:
    """One thumbnail of a unit's top-activating cache image.

    Attributes
    ----------
    row
        Cache row.
    path
        Absolute path of the source image ("" when it could not be resolved).
    activation
        The unit's activation on it.
    rgb_hw3
        uint8 thumbnail with the unit's contribution map overlaid (no overlay when the cache
        has no per-location embeddings); None when the image could not be read.
    note
        Why the thumbnail is missing or bare, else "".
    """

    row: int
    path: str
    activation: float
    rgb_hw3: np.ndarray | None
    note: str = ""


def _thumb_hw(h: int, w: int, size: int) -> tuple[int, int]:
    s = size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def gallery_job(
    cache_path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None,
    sae: Any,
    unit: int,
    rows_n: Sequence[int],
    activations_n: Sequence[float],
    *,
    size: int = 176,
    cmap: str = DEFAULT_CMAP,
    opacity: float = DEFAULT_OPACITY,
) -> Generator[Progress, None, list[GalleryItem]]:
    """Thumbnails of cache rows with ``unit``'s contribution map (one per yield).

    The map uses the cache's stored per-location embeddings (``/patch_embeddings``), so no
    encoder is needed; images are read from ``images_root / paths[row]``.
    """
    from medsae_desktop.core.cache import EmbeddingCache
    from medsae_desktop.core.images import read_image

    out: list[GalleryItem] = []
    with EmbeddingCache(cache_path) as cache:
        root = Path(images_root) if images_root else cache.path.parent
        paths = cache.paths
        lut = colormap_lut(cmap)
        for i, (row, act) in enumerate(zip(rows_n, activations_n, strict=True)):
            row = int(row)
            rel = str(paths[row])
            p = Path(rel) if os.path.isabs(rel) else root / rel
            note = ""
            rgb = None
            try:
                img = read_image(p)
                h, w = img.render_hw.shape
                th, tw = _thumb_hw(h, w, size)
                from PIL import Image

                small = np.asarray(Image.fromarray(img.render_hw).resize(
                    (tw, th), resample=Image.BILINEAR))
                rgba = None
                if cache.has_patches:
                    map_gg = sae.pre_activations(cache.read_patches(row, row + 1)[0])[:, unit]
                    g = int(round(math.sqrt(map_gg.shape[0])))
                    mask = None
                    if img.padding_mask_hw is not None:
                        mask = np.asarray(Image.fromarray(img.padding_mask_hw.astype(np.uint8)
                                                          * 255).resize((tw, th))) > 127
                    heat = upsample_map(map_gg.reshape(g, g), (h, w), mask, out_hw=(th, tw))
                    rgba = scale_alpha(overlay_layer(heat, lut, opacity=1.0).rgba_hw4, opacity)
                else:
                    note = "no per-location embeddings in the cache"
                rgb = composite(small, rgba)
            except MedsaeError as exc:
                note = str(exc)
            except OSError as exc:
                note = f"{p}: {exc}"
            out.append(GalleryItem(row=row, path=str(p), activation=float(act), rgb_hw3=rgb,
                                   note=note))
            yield Progress(i + 1, len(rows_n), f"thumbnail {i + 1}/{len(rows_n)}")
    return out


# ----------------------------------------------------------------------------------------------
# Where a headless run finds the population and the names (same sources as the viewer)
# ----------------------------------------------------------------------------------------------
def training_cache_of(sae: Any) -> Path | None:
    """The embedding cache an SAE was trained on, if it can still be found.

    ``cfg.json["train"]["cache"]["path"]`` as recorded by the trainer; when that file moved
    (e.g. a workspace folder was renamed) a file of the same name beside the SAE folder.
    """
    rec = ((sae.cfg.get("train") or {}).get("cache") or {}).get("path")
    if not rec:
        return None
    p = Path(str(rec))
    if p.is_file():
        return p
    if getattr(sae, "path", None) is not None:
        for cand in (Path(sae.path).parent / p.name, Path(sae.path) / p.name):
            if cand.is_file():
                return cand
    return None


def default_store_path() -> Path:
    """The desktop app's annotation store (per-user data folder)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("medsae-desktop")) / "annotations.sqlite"


def names_for(sae: Any, store_path: str | os.PathLike[str] | None = None
              ) -> dict[int, FeatureName]:
    """Names of ``sae`` as the viewer shows them: the annotation store, else a ``names.csv``
    beside the SAE folder (as proposed names), else none."""
    from medsae_desktop.core.annotations import AnnotationStore

    sp = Path(store_path) if store_path is not None else default_store_path()
    if sp.is_file():
        with AnnotationStore(sp) as store:
            names = store.names(sae.sae_id)
        if names:
            return names
    if getattr(sae, "path", None) is None:
        return {}
    import csv

    for cand in (Path(sae.path) / "names.csv", Path(sae.path).parent / "names.csv"):
        if cand.is_file():
            with cand.open(newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if (r.get("concept") or "").strip()]
            out = {}
            for r in rows:
                try:
                    u = int(r["unit"])
                except (KeyError, ValueError):
                    continue
                out[u] = FeatureName(sae.sae_id, u, r["concept"], r.get("description") or "",
                                     r.get("namer") or "", None, "proposed", "", "", "")
            return out
    return {}
