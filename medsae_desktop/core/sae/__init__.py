"""Sparse autoencoders: numpy inference, checkpoints, (torch) training, import from peers.

Public, torch-free API (the clinician install has no torch)::

    from medsae_desktop.core.sae import load_sae, save_sae, SAE
    sae = load_sae(sae_dir)
    acts_ns = sae.encode(x_nd)

Training lives in :mod:`medsae_desktop.core.sae.train` (imports torch; import it explicitly),
importers of SAELens / dictionary_learning checkpoints in :mod:`.convert`.
Importing this package never imports torch.
"""

from medsae_desktop.core.sae.checkpoint import SCHEMA_VERSION, load_sae, read_cfg, save_sae
from medsae_desktop.core.sae.runtime import ARCHS, SAE, THRESHOLD_ARCHS

__all__ = ["ARCHS", "SAE", "SCHEMA_VERSION", "THRESHOLD_ARCHS", "load_sae", "read_cfg",
           "save_sae"]
