"""The ``vocab`` namer: decoder direction vs MedCLIP text embeddings of a radiology vocabulary.

Discover-then-Name style (Rao et al., ECCV 2024; the MedSAE repo's ``assign_names.py``): a unit's
name is the vocabulary term whose MedCLIP text embedding has the largest cosine with the unit's
direction in embedding space — the SAE decoder row (its normalisation x̃ = s·(x − μ) rescales
and shifts, so the direction, hence the cosine, is unchanged), or the basis vector for a raw
dimension. The score is that cosine. numpy only; the text embeddings come from
:mod:`medsae_desktop.core.naming.medclip_text`. No Qt, no printing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.labels import CHEXPERT_LABELS
from medsae_desktop.core.naming.names import FeatureName

NAMER = "vocab"

#: Built-in radiology vocabulary: the CheXpert observations plus common chest-radiograph
#: findings, locations, devices and technical factors (a user file replaces it).
DEFAULT_TERMS: tuple[str, ...] = CHEXPERT_LABELS + (
    "normal chest radiograph", "left pleural effusion", "right pleural effusion",
    "bilateral pleural effusions", "small pleural effusion", "large pleural effusion",
    "blunted costophrenic angle", "pulmonary edema", "interstitial edema",
    "vascular congestion", "cephalization", "Kerley B lines", "enlarged heart",
    "cardiothoracic ratio increased", "widened mediastinum", "hilar enlargement",
    "left lower lobe consolidation", "right lower lobe consolidation",
    "right upper lobe consolidation", "air bronchograms", "airspace opacity",
    "patchy opacities", "diffuse bilateral opacities", "ground glass opacity",
    "reticular opacities", "lung nodule", "multiple pulmonary nodules", "lung mass",
    "cavitary lesion", "granuloma", "calcified nodule", "left apical pneumothorax",
    "right pneumothorax", "tension pneumothorax", "pleural line", "subcutaneous emphysema",
    "pneumomediastinum", "basilar atelectasis", "plate-like atelectasis", "lobar collapse",
    "elevated hemidiaphragm", "hyperinflation", "emphysema", "bullae", "fibrosis",
    "pleural thickening", "pleural plaques", "rib fracture", "clavicle fracture",
    "vertebral compression fracture", "healed rib fractures", "scoliosis", "osteopenia",
    "endotracheal tube", "nasogastric tube", "central venous catheter", "PICC line",
    "chest tube", "pacemaker", "implantable cardioverter defibrillator", "sternotomy wires",
    "prosthetic heart valve", "ECG leads", "surgical clips", "tracheostomy tube",
    "portable AP radiograph", "PA radiograph", "lateral view", "low lung volumes",
    "patient rotation", "underexposed image", "overexposed image", "motion artifact",
    "image text marker", "breast shadows", "obese patient", "pediatric patient",
    "aortic calcification", "tortuous aorta", "hiatal hernia", "free air under the diaphragm",
)


def read_terms(path: str | os.PathLike[str]) -> list[str]:
    """A vocabulary file: one term per line; blank lines and ``#`` comments are skipped."""
    p = Path(path)
    if not p.is_file():
        raise MedsaeError("vocabulary file not found", p)
    terms = []
    for line in p.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            terms.append(s)
    if not terms:
        raise MedsaeError("vocabulary file has no terms", p)
    return list(dict.fromkeys(terms))  # de-duplicate, keep order


def name_by_vocab(directions_kd: np.ndarray, term_emb_td: np.ndarray, terms: Sequence[str],
                  units: Sequence[int] | None = None, *, n_alternatives: int = 3
                  ) -> list[FeatureName]:
    """Name units after the vocabulary term closest to their direction.

    Parameters
    ----------
    directions_kd
        One direction per unit in embedding space (SAE ``W_dec_sd`` or an identity), (K, D).
    term_emb_td
        Text embeddings of the terms, (T, D).
    terms
        The T terms.
    units
        Units to name (default all).
    n_alternatives
        Runner-up terms listed in the description.
    """
    d_kd = np.asarray(directions_kd, np.float64)
    t_td = np.asarray(term_emb_td, np.float64)
    if d_kd.shape[1] != t_td.shape[1]:
        raise MedsaeError(f"text embeddings are {t_td.shape[1]}-d but unit directions are "
                          f"{d_kd.shape[1]}-d (different encoder?)")
    d_kd = d_kd / np.maximum(np.linalg.norm(d_kd, axis=1, keepdims=True), 1e-12)
    t_td = t_td / np.maximum(np.linalg.norm(t_td, axis=1, keepdims=True), 1e-12)
    units = list(range(d_kd.shape[0])) if units is None else [int(u) for u in units]
    cos_ut = d_kd[units] @ t_td.T
    out = []
    for i, u in enumerate(units):
        order = np.argsort(-cos_ut[i], kind="stable")[: n_alternatives + 1]
        best = int(order[0])
        alt = ", ".join(f"{terms[j]} ({cos_ut[i, j]:.3f})" for j in order[1:])
        desc = f"closest MedCLIP text: {terms[best]} (cos {cos_ut[i, best]:.3f})" + (
            f"; then {alt}" if alt else "")
        out.append(FeatureName(u, str(terms[best]), desc, NAMER, float(cos_ut[i, best])))
    return out
