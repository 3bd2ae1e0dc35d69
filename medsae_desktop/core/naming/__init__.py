"""Feature namers (DESIGN.md §5.4): ``labels``, ``vocab`` (MedCLIP text tower), ``medgemma``.

Public API::

    from medsae_desktop.core.naming import NameConfig, name_units_job, read_names_csv
    result = run_job(name_units_job("c.h5", "names.csv", sae_dir="sae",
                                    config=NameConfig(namer="labels")))

MedGemma specifics live in :mod:`medsae_desktop.core.naming.medgemma` (lazy torch /
transformers imports); the MedCLIP text tower in :mod:`.medclip_text`. Importing this package
imports numpy and h5py only (no torch, no Qt).
"""

from medsae_desktop.core.naming.jobs import NAMERS, NameConfig, NameResult, name_units_job
from medsae_desktop.core.naming.label_namer import name_by_labels
from medsae_desktop.core.naming.names import (
    NAMES_COLUMNS, UNPARSED, FeatureName, read_names_csv, write_names_csv)
from medsae_desktop.core.naming.vocab_namer import DEFAULT_TERMS, name_by_vocab, read_terms

__all__ = [
    "DEFAULT_TERMS", "NAMERS", "NAMES_COLUMNS", "UNPARSED", "FeatureName", "NameConfig",
    "NameResult", "name_by_labels", "name_by_vocab", "name_units_job", "read_names_csv",
    "read_terms", "write_names_csv",
]
