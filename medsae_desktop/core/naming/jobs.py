"""The naming job behind ``medsae name``: labels, vocab or MedGemma namer over many units.

:func:`name_units_job` yields :class:`Progress` and returns :class:`NameResult`; it writes
``NAMES.csv`` (DESIGN.md §3 columns) atomically when done. The MedGemma namer is resumable
through ``NAMES.csv.progress.jsonl`` (see :mod:`.progress_log`). No Qt, no printing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.cache import EmbeddingCache
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.eval.data import default_images_root, make_units
from medsae_desktop.core.naming.names import UNPARSED, FeatureName, write_names_csv
from medsae_desktop.core.progress import Progress

NAMERS = ("labels", "vocab", "medgemma")
#: Official rule: name only units active on more than 2 × 30 images.
MIN_ACTIVE = 61


@dataclasses.dataclass(frozen=True)
class NameConfig:
    """Settings of one naming run."""

    namer: str = "labels"
    """``labels``, ``vocab`` or ``medgemma``."""
    units: tuple[int, ...] | None = None
    """Explicit units to name (default: all, or all eligible for medgemma)."""
    max_units: int | None = None
    """Name at most this many units (the first eligible ones)."""
    min_active: int = MIN_ACTIVE
    """medgemma: skip units active on fewer images (official: more than 60)."""
    seed: int = 0
    """Shuffles the images shown per unit."""
    max_new_tokens: int = 300
    """medgemma: generation length (official 300)."""
    resume: bool = False
    """medgemma: continue an interrupted run from its progress file."""
    labels_csv: str | None = None
    """labels: CheXpert-style CSV (default the cache's /labels)."""
    uncertain: str = "zeros"
    """labels: uncertainty policy."""
    report_dir: str | None = None
    """labels: reuse the correlation of an existing ``medsae eval`` report."""
    images_root: str | None = None
    """medgemma: folder the cache's paths are relative to (default: from the cache)."""
    medclip_weights: str | None = None
    """vocab: MedCLIP weights folder (with the text tower)."""
    bert_vocab: str | None = None
    """vocab: Bio_ClinicalBERT ``vocab.txt`` (default: ``vocab.txt`` in ``medclip_weights``)."""
    terms_file: str | None = None
    """vocab: radiology vocabulary, one term per line (default: built-in list)."""
    chunk_rows: int = 4096
    """Images read at a time."""


@dataclasses.dataclass(frozen=True)
class NameResult:
    """What a naming run produced."""

    names: tuple[FeatureName, ...]
    output: Path
    n_unparsed: int
    n_resumed: int
    answers: Path | None


def name_units_job(
    cache_path: str | os.PathLike[str],
    output_csv: str | os.PathLike[str],
    *,
    sae_dir: str | os.PathLike[str] | None = None,
    config: NameConfig = NameConfig(),
    medgemma: Any = None,
) -> Generator[Progress, None, NameResult]:
    """Name units of an SAE (or raw dimensions with ``sae_dir=None``) and write ``NAMES.csv``.

    Parameters
    ----------
    cache_path
        Embedding cache (activations, labels, image paths).
    output_csv
        ``NAMES.csv`` to write.
    sae_dir
        SAE folder, None for raw dimensions.
    config
        :class:`NameConfig`.
    medgemma
        For the medgemma namer: a loaded :class:`~medsae_desktop.core.naming.medgemma.MedGemma`
        or a :class:`~medsae_desktop.core.naming.medgemma.MedGemmaConfig` (loaded here, after
        the cheap checks).
    """
    if config.namer not in NAMERS:
        raise MedsaeError(f"unknown namer {config.namer!r}")
    if config.namer == "labels":
        names = yield from _labels_names(cache_path, sae_dir, config)
        result = NameResult(tuple(names), write_names_csv(output_csv, names), 0, 0, None)
    elif config.namer == "vocab":
        names = yield from _vocab_names(cache_path, sae_dir, config)
        result = NameResult(tuple(names), write_names_csv(output_csv, names), 0, 0, None)
    else:
        result = yield from _medgemma_names(cache_path, Path(output_csv), sae_dir, config,
                                            medgemma)
    yield Progress(1, 1, f"wrote {len(result.names)} names")
    return result


def _pick(units: Sequence[int], config: NameConfig) -> list[int]:
    out = [int(u) for u in units]
    if config.max_units is not None:
        out = out[: config.max_units]
    return out


def _check_units(units: Sequence[int], n_units: int) -> None:
    bad = [u for u in units if not 0 <= u < n_units]
    if bad:
        raise MedsaeError(f"unit {bad[0]} out of range (0..{n_units - 1})")


# ---- labels -----------------------------------------------------------------------------------
def _labels_names(cache_path: Any, sae_dir: Any, config: NameConfig
                  ) -> Generator[Progress, None, list[FeatureName]]:
    from medsae_desktop.core.naming.label_namer import name_by_labels

    if config.report_dir is not None:
        from medsae_desktop.core.eval.report import load_report

        rep = load_report(config.report_dir)
        corr_kc, names = rep.corr_kc, rep.label_names
    else:
        from medsae_desktop.core.eval.engine import EvalConfig, evaluate_job

        ev = EvalConfig(uncertain=config.uncertain, f1=False, monosemanticity=False,
                        chunk_rows=config.chunk_rows)
        res = yield from evaluate_job(cache_path, sae_dir=sae_dir, labels_csv=config.labels_csv,
                                      config=ev)
        corr_kc, names = res.corr_kc, res.label_names
    if not names:
        raise MedsaeError("the labels namer needs labels (the cache has none; pass --labels)",
                          cache_path)
    units = list(config.units) if config.units is not None else list(range(corr_kc.shape[0]))
    _check_units(units, corr_kc.shape[0])
    return name_by_labels(corr_kc, names, _pick(units, config))


# ---- vocab ------------------------------------------------------------------------------------
def _vocab_names(cache_path: Any, sae_dir: Any, config: NameConfig
                 ) -> Generator[Progress, None, list[FeatureName]]:
    from medsae_desktop.core.naming.medclip_text import load_medclip_text
    from medsae_desktop.core.naming.vocab_namer import DEFAULT_TERMS, name_by_vocab, read_terms

    if config.medclip_weights is None:
        raise MedsaeError("the vocab namer needs the MedCLIP weights folder (--medclip DIR)")
    vocab_txt = config.bert_vocab or str(Path(config.medclip_weights) / "vocab.txt")
    with EmbeddingCache(cache_path) as cache:
        d = cache.embedding_dim
    units_src = make_units(sae_dir, d)
    directions_kd = (units_src.sae.W_dec_sd if units_src.sae is not None
                     else np.eye(d, dtype=np.float32))
    terms = read_terms(config.terms_file) if config.terms_file else list(DEFAULT_TERMS)
    yield Progress(0, len(terms), "loading the MedCLIP text tower")
    enc = load_medclip_text(config.medclip_weights, vocab_txt)
    emb = []
    for i in range(0, len(terms), 16):
        emb.append(enc.encode(terms[i:i + 16]))
        yield Progress(min(len(terms), i + 16), len(terms), "embedding the vocabulary")
    term_emb_td = np.concatenate(emb)
    units = list(config.units) if config.units is not None else list(range(units_src.n_units))
    _check_units(units, units_src.n_units)
    return name_by_vocab(directions_kd, term_emb_td, terms, _pick(units, config))


# ---- medgemma ---------------------------------------------------------------------------------
def prompt_fingerprint() -> str:
    """sha256 (16 hex) of the MedGemma prompts: a resumed run must use the same prompts."""
    from medsae_desktop.core.naming import medgemma as mg

    text = "\n".join([mg.NAMING_SYSTEM_PROMPT, mg.NAMING_PROMPT, mg.SCORING_SYSTEM_PROMPT,
                      mg.SCORING_PROMPT])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _medgemma_names(cache_path: Any, output: Path, sae_dir: Any, config: NameConfig,
                    medgemma: Any) -> Generator[Progress, None, NameResult]:
    from medsae_desktop.core.naming.medgemma import (
        MedGemmaConfig, check_model_dir, load_pil_images, naming_conversation, parse_name_answer)
    from medsae_desktop.core.naming.progress_log import ProgressLog
    from medsae_desktop.core.naming.selection import collect_unit_rows_job, naming_rows

    if medgemma is None:
        raise MedsaeError("the medgemma namer needs a MedGemma folder (--medgemma DIR)")
    if isinstance(medgemma, MedGemmaConfig):
        check_model_dir(medgemma.model_dir)  # fail fast, before the pass over the cache
    with EmbeddingCache(cache_path) as cache:
        units_src = make_units(sae_dir, cache.embedding_dim)
        root = Path(config.images_root) if config.images_root else default_images_root(cache)
        paths = cache.paths
        candidates = (list(config.units) if config.units is not None
                      else list(range(units_src.n_units)))
        _check_units(candidates, units_src.n_units)
        rows = yield from collect_unit_rows_job(cache, units_src.encode, candidates,
                                                chunk_rows=config.chunk_rows)
    eligible = [u for u in candidates
                if rows.var_ok_u[rows.index(u)] and rows.n_active_u[rows.index(u)]
                >= (1 if config.units is not None else config.min_active)]
    todo_units = _pick(eligible, config)
    if not todo_units:
        raise MedsaeError(f"no unit is active on at least {config.min_active} images (official "
                          "rule for MedGemma naming); use a larger cache or --min-active",
                          cache_path)
    header = {"job": "name", "namer": "medgemma", "units_kind": units_src.kind,
              "sae_id": getattr(units_src.sae, "sae_id", None), "n_cache": int(len(paths)),
              "prompts": prompt_fingerprint(), "seed": config.seed,
              "max_new_tokens": config.max_new_tokens}
    log = ProgressLog(output, header, resume=config.resume, key=lambda r: int(r["unit"]))
    n_resumed = sum(1 for u in todo_units if u in log.done)
    todo = [u for u in todo_units if u not in log.done]
    model = medgemma
    if todo and isinstance(medgemma, MedGemmaConfig):
        from medsae_desktop.core.naming.medgemma import load_medgemma

        yield Progress(n_resumed, len(todo_units), "loading MedGemma")
        model = load_medgemma(medgemma)
    done = n_resumed
    batch = max(1, getattr(model, "batch_size", 1))
    for i in range(0, len(todo), batch):
        group = todo[i:i + batch]
        convs, picks = [], []
        for u in group:
            pick = naming_rows(rows, u, seed=config.seed)
            picks.append(pick)
            convs.append(naming_conversation(load_pil_images([paths[r] for r in pick], root)))
        answers = model.generate(convs, config.max_new_tokens)
        for u, pick, ans in zip(group, picks, answers):
            p = parse_name_answer(ans)
            log.append({"unit": int(u), "concept": p.concept, "description": p.description,
                        "parsed": p.ok, "raw": p.raw, "rows": [int(r) for r in pick],
                        "n_active": int(rows.n_active_u[rows.index(u)])})
        done += len(group)
        yield Progress(done, len(todo_units), f"named {done}/{len(todo_units)} units")
    names = []
    n_unparsed = 0
    for u in todo_units:
        r = log.done[u]
        n_unparsed += r["concept"] == UNPARSED
        names.append(FeatureName(int(u), r["concept"], r["description"], "medgemma", math.nan))
    out = write_names_csv(output, names)
    answers = log.finish()
    return NameResult(tuple(names), out, n_unparsed, n_resumed, answers)
