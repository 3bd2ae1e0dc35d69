"""Naming accuracy (DESIGN.md §5.4; ``medsae score-names``): does MedGemma recognise a name?

The paper's protocol (``reference/paper.md`` §7.2): for each named unit, 30 top-activating and
30 random non-activating images, shuffled; MedGemma is shown the unit's concept and description
and asked, five images at a time, which images show it; accuracy = (TP + TN) / 60 against the
unit's true (binarised) activations. A malformed or wrong-length answer counts as all zeros,
as in the official code (and is counted in ``n_unparsed_chunks``).

Conditions scored side by side:

* ``sae`` (or ``raw`` when the names are of raw dimensions): the names as given;
* ``shuffled``: the same units with names permuted among them (a derangement, seeded) — the
  "random explanation" baseline;
* ``raw``: raw-dimension names (``raw_names_csv``) scored against raw-dimension activations —
  the "MedCLIP raw embeddings" baseline.

Results: ``SCORES.csv`` (one row per condition and unit), ``SCORES.summary.json`` (mean ± std per
condition) and ``SCORES.png`` (the accuracy distributions, as the paper's figure). Resumable via
``SCORES.csv.progress.jsonl``. No Qt, no printing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.cache import EmbeddingCache
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.eval.data import default_images_root, make_units
from medsae_desktop.core.naming.names import UNPARSED, FeatureName, read_names_csv
from medsae_desktop.core.progress import Progress

SCORES_COLUMNS = ("condition", "unit", "concept", "accuracy", "tp", "tn", "fp", "fn",
                  "n_images", "n_unparsed_chunks")


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """Settings of a naming-accuracy run."""

    per_side: int = 30
    """Activating and non-activating images per unit (official 30 + 30)."""
    chunk: int = 5
    """Images per MedGemma query (official 5)."""
    seed: int = 42
    """Seeds image sampling, shuffling and the shuffled-name baseline (official 42)."""
    shuffled: bool = True
    """Also score the shuffled-name baseline."""
    max_new_tokens: int = 500
    """Generation length per query (official 500; 20 suffices for a 5-item list)."""
    units: tuple[int, ...] | None = None
    """Score only these units (default: every named unit)."""
    max_units: int | None = None
    """Score at most this many units per condition."""
    resume: bool = False
    """Continue an interrupted run from its progress file."""
    images_root: str | None = None
    """Folder the cache's paths are relative to (default: from the cache)."""
    chunk_rows: int = 4096
    """Images read at a time."""


@dataclasses.dataclass(frozen=True)
class UnitScore:
    """Accuracy of one name on one unit."""

    condition: str
    unit: int
    concept: str
    tp: int
    tn: int
    fp: int
    fn: int
    n_unparsed_chunks: int

    @property
    def n_images(self) -> int:
        """Images judged."""
        return self.tp + self.tn + self.fp + self.fn

    @property
    def accuracy(self) -> float:
        """(TP + TN) / images."""
        return (self.tp + self.tn) / self.n_images if self.n_images else math.nan


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """A finished naming-accuracy run."""

    scores: tuple[UnitScore, ...]
    summary: dict[str, Any]
    output: Path
    plot: Path | None


def accuracy_counts(pred_i: Sequence[int], target_i: Sequence[int]) -> tuple[int, int, int, int]:
    """(TP, TN, FP, FN) of binary predictions against targets."""
    p = np.asarray(pred_i, bool)
    t = np.asarray(target_i, bool)
    return (int((p & t).sum()), int((~p & ~t).sum()), int((p & ~t).sum()), int((~p & t).sum()))


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation with no fixed point (identity for n < 2)."""
    if n < 2:
        return np.arange(n)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def _usable(names: Sequence[FeatureName]) -> list[FeatureName]:
    return [n for n in names if n.concept and n.concept != UNPARSED]


def score_names_job(
    cache_path: str | os.PathLike[str],
    names_csv: str | os.PathLike[str],
    output_csv: str | os.PathLike[str],
    medgemma: Any,
    *,
    sae_dir: str | os.PathLike[str] | None = None,
    raw_names_csv: str | os.PathLike[str] | None = None,
    config: ScoreConfig = ScoreConfig(),
) -> Generator[Progress, None, ScoreResult]:
    """Score names with MedGemma; writes ``SCORES.csv``, ``.summary.json`` and ``.png``.

    Parameters
    ----------
    cache_path
        Embedding cache (activations and image paths).
    names_csv
        Names of the units of ``sae_dir`` (or of raw dimensions when ``sae_dir`` is None).
    output_csv
        ``SCORES.csv`` to write.
    medgemma
        A loaded :class:`~medsae_desktop.core.naming.medgemma.MedGemma` or a
        :class:`~medsae_desktop.core.naming.medgemma.MedGemmaConfig` (loaded after the checks).
    sae_dir
        SAE folder; None when ``names_csv`` names raw dimensions.
    raw_names_csv
        Names of raw dimensions for the ``raw`` baseline (optional).
    config
        :class:`ScoreConfig`.
    """
    from medsae_desktop.core.naming.jobs import prompt_fingerprint
    from medsae_desktop.core.naming.medgemma import (
        MedGemmaConfig, check_model_dir, load_medgemma, load_pil_images, parse_binary_answer,
        scoring_conversation)
    from medsae_desktop.core.naming.progress_log import ProgressLog
    from medsae_desktop.core.naming.selection import collect_unit_rows_job, scoring_rows

    if config.per_side < 1 or config.chunk < 1:
        raise MedsaeError("per-side image count and chunk size must be at least 1")
    if isinstance(medgemma, MedGemmaConfig):
        check_model_dir(medgemma.model_dir)
    output = Path(output_csv)
    main_kind = "sae" if sae_dir is not None else "raw"
    main_names = _select(_usable(read_names_csv(names_csv)), config)
    if not main_names:
        raise MedsaeError("no usable name to score (all empty or unparsed)", names_csv)
    # condition -> (unit kind, list of (unit, name used))
    plan: dict[str, tuple[str, list[tuple[int, FeatureName]]]] = {
        main_kind: (main_kind, [(n.unit, n) for n in main_names])}
    if config.shuffled and len(main_names) >= 2:
        perm = derangement(len(main_names), np.random.default_rng(config.seed))
        plan["shuffled"] = (main_kind, [(main_names[i].unit, main_names[int(j)])
                                        for i, j in enumerate(perm)])
    if raw_names_csv is not None:
        if main_kind == "raw":
            raise MedsaeError("--raw-names is for scoring an SAE's names against raw ones; "
                              "these names already are raw-dimension names")
        raw_names = _select(_usable(read_names_csv(raw_names_csv)), config)
        if raw_names:
            plan["raw"] = ("raw", [(n.unit, n) for n in raw_names])

    with EmbeddingCache(cache_path) as cache:
        root = Path(config.images_root) if config.images_root else default_images_root(cache)
        paths = cache.paths
        rows_by_kind = {}
        sae_id = None
        for kind in sorted({k for k, _ in plan.values()}):
            src = make_units(sae_dir if kind == "sae" else None, cache.embedding_dim)
            units = sorted({u for c, (k, items) in plan.items() if k == kind for u, _ in items})
            bad = [u for u in units if not 0 <= u < src.n_units]
            if bad:
                raise MedsaeError(f"unit {bad[0]} in the names is out of range "
                                  f"(0..{src.n_units - 1})", names_csv)
            rows_by_kind[kind] = yield from collect_unit_rows_job(
                cache, src.encode, units, n_top=config.per_side, n_inactive=2 * config.per_side,
                seed=config.seed, chunk_rows=config.chunk_rows)
            if kind == "sae":
                sae_id = getattr(src.sae, "sae_id", None)
    header = {"job": "score-names", "prompts": prompt_fingerprint(), "seed": config.seed,
              "per_side": config.per_side, "chunk": config.chunk,
              "max_new_tokens": config.max_new_tokens, "n_cache": int(len(paths)),
              "sae_id": sae_id,
              "plan": {c: [[u, n.concept] for u, n in items] for c, (_, items) in plan.items()}}
    log = ProgressLog(output, header, resume=config.resume,
                      key=lambda r: (r["condition"], int(r["unit"])))
    items = [(c, kind, u, n) for c, (kind, lst) in plan.items() for u, n in lst]
    todo = [it for it in items if (it[0], it[2]) not in log.done]
    model = medgemma
    if todo and isinstance(medgemma, MedGemmaConfig):
        yield Progress(len(items) - len(todo), len(items), "loading MedGemma")
        model = load_medgemma(medgemma)
    done = len(items) - len(todo)
    for cond, kind, unit, name in todo:
        rows_i, target_i = scoring_rows(rows_by_kind[kind], unit, per_side=config.per_side,
                                        seed=config.seed)
        chunks = [slice(s, s + config.chunk) for s in range(0, rows_i.size, config.chunk)]
        convs = [scoring_conversation(name.concept, name.description,
                                      load_pil_images([paths[r] for r in rows_i[sl]], root))
                 for sl in chunks]
        answers = model.generate(convs, config.max_new_tokens)
        pred: list[int] = []
        n_bad = 0
        for sl, ans in zip(chunks, answers):
            vals, ok = parse_binary_answer(ans, rows_i[sl].size)
            pred += vals
            n_bad += not ok
        log.append({"condition": cond, "unit": int(unit), "concept": name.concept,
                    "rows": rows_i.tolist(), "target": target_i.tolist(), "pred": pred,
                    "n_unparsed": n_bad, "raw": answers})
        done += 1
        yield Progress(done, len(items), f"{cond}: scored unit {unit} ({done}/{len(items)})")

    scores = []
    for cond, _kind, unit, name in items:
        r = log.done[(cond, unit)]
        tp, tn, fp, fn = accuracy_counts(r["pred"], r["target"])
        scores.append(UnitScore(cond, int(unit), name.concept, tp, tn, fp, fn,
                                int(r["n_unparsed"])))
    summary = summarize_scores(scores)
    _write_scores(output, scores)
    _atomic(output.with_suffix(".summary.json"), json.dumps(summary, indent=2) + "\n")
    plot = plot_accuracy(scores, output.with_suffix(".png"))
    log.finish()
    return ScoreResult(tuple(scores), summary, output, plot)


def _select(names: list[FeatureName], config: ScoreConfig) -> list[FeatureName]:
    if config.units is not None:
        want = set(config.units)
        names = [n for n in names if n.unit in want]
    if config.max_units is not None:
        names = names[: config.max_units]
    return names


def summarize_scores(scores: Sequence[UnitScore]) -> dict[str, Any]:
    """Mean, std, median accuracy and counts per condition."""
    out: dict[str, Any] = {"conditions": {}}
    for cond in dict.fromkeys(s.condition for s in scores):
        acc = np.array([s.accuracy for s in scores if s.condition == cond], np.float64)
        acc = acc[np.isfinite(acc)]
        out["conditions"][cond] = {
            "n_units": int(acc.size),
            "mean_accuracy": float(acc.mean()) if acc.size else None,
            "std_accuracy": float(acc.std()) if acc.size else None,
            "median_accuracy": float(np.median(acc)) if acc.size else None,
            "n_unparsed_chunks": int(sum(s.n_unparsed_chunks for s in scores
                                         if s.condition == cond)),
        }
    return out


def _write_scores(path: Path, scores: Sequence[UnitScore]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SCORES_COLUMNS)
    for s in scores:
        w.writerow([s.condition, s.unit, s.concept, f"{s.accuracy:.6g}", s.tp, s.tn, s.fp, s.fn,
                    s.n_images, s.n_unparsed_chunks])
    _atomic(path, buf.getvalue())


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _kde(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    # Gaussian KDE, Scott's bandwidth (scipy-free); a floor keeps identical values plottable.
    bw = max(1.06 * float(x.std()) * x.size ** (-1 / 5), 0.02)
    z = (grid[:, None] - x[None, :]) / bw
    return np.exp(-0.5 * z * z).sum(axis=1) / (x.size * bw * math.sqrt(2 * math.pi))


def plot_accuracy(scores: Sequence[UnitScore], path: str | os.PathLike[str]) -> Path | None:
    """Accuracy distribution per condition (KDE + rug, as the paper's figure); None if empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys(s.condition for s in scores))
    if not conds:
        return None
    labels = {"sae": "SAE features", "raw": "MedCLIP raw embeddings",
              "shuffled": "Random (shuffled) explanation"}
    colors = {"sae": "#1f77b4", "raw": "#ff7f0e", "shuffled": "#7f7f7f"}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    grid = np.linspace(0, 1, 401)
    for cond in conds:
        acc = np.array([s.accuracy for s in scores if s.condition == cond], np.float64)
        acc = acc[np.isfinite(acc)]
        if not acc.size:
            continue
        col = colors.get(cond, None)
        ax.plot(grid, _kde(acc, grid), color=col,
                label=f"{labels.get(cond, cond)} (n={acc.size}, mean {acc.mean():.3f})")
        ax.plot(acc, np.zeros_like(acc) - 0.05, "|", color=col, markersize=10)
    ax.axvline(0.5, color="#bbbbbb", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("naming accuracy (TP + TN) / images")
    ax.set_ylabel("density")
    ax.set_title("MedGemma naming accuracy", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def read_scores_csv(path: str | os.PathLike[str]) -> list[UnitScore]:
    """Read a ``SCORES.csv`` written by :func:`score_names_job`."""
    p = Path(path)
    if not p.is_file():
        raise MedsaeError("scores CSV not found", p)
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    try:
        return [UnitScore(r["condition"], int(r["unit"]), r["concept"], int(r["tp"]),
                          int(r["tn"]), int(r["fp"]), int(r["fn"]), int(r["n_unparsed_chunks"]))
                for r in rows]
    except (KeyError, ValueError) as exc:
        raise MedsaeError(f"malformed scores CSV ({exc})", p) from None
