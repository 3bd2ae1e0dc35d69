"""Torch-free SAE inference (numpy only): what the viewer, eval and naming code call.

The clinician install has no torch, so everything needed to *use* a trained SAE lives here,
on plain float32 numpy arrays. Training (torch) is in :mod:`medsae_desktop.core.sae.train`.

Forward pass (DESIGN.md §5.2), with x̃ = s·(x − μ)::

    pre_ns  = (x̃ − b_dec) @ W_enc_ds + b_enc_s        # affine, used for heat maps
    acts_ns = activation(pre_ns)                       # relu | topk | threshold
    x̂̃_nd   = acts_ns @ W_dec_sd + b_dec_d             # in the normalised space
    x̂_nd    = x̂̃_nd / s + μ                            # back in the embedding space

Every activation is per-row, so one image gives the same result alone or in a batch: BatchTopK
and Matryoshka (BatchTopK-based) use the per-latent inference ``threshold`` learnt in training,
exactly like JumpReLU.

No torch, no Qt, no printing here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Architectures whose inference activation is ``pre * (pre > threshold)``.
THRESHOLD_ARCHS = frozenset({"batchtopk", "jumprelu", "matryoshka"})
#: Every architecture this program can train or load.
ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")


class SAE:
    """A loaded sparse autoencoder for inference (numpy, float32).

    Build it with :func:`medsae_desktop.core.sae.load_sae` (from a checkpoint folder) or
    :meth:`from_tensors` (in memory). Attributes are read-only by convention.

    Attributes
    ----------
    cfg : dict
        The parsed ``cfg.json`` (after migration).
    arch : str
        One of :data:`ARCHS`.
    d_in, d_sae : int
        Embedding width and dictionary size.
    k : int or None
        TopK ``k`` (also the training ``k`` of BatchTopK/Matryoshka); None for relu/jumprelu.
    sae_id : str
        sha256 hex of the ``sae.safetensors`` bytes: the key annotations are stored under.
    W_enc_ds, b_enc_s, W_dec_sd, b_dec_d, input_mean_d : np.ndarray
        Weights as in DESIGN.md §4.2 (float32, C-contiguous).
    input_scale : float
        The scalar ``s`` of the input normalisation.
    threshold_s : np.ndarray or None
        Per-latent inference threshold (threshold architectures), else None.
    path : pathlib.Path or None
        The checkpoint folder it was loaded from.
    """

    def __init__(
        self,
        *,
        cfg: Mapping[str, Any],
        W_enc_ds: np.ndarray,
        b_enc_s: np.ndarray,
        W_dec_sd: np.ndarray,
        b_dec_d: np.ndarray,
        input_mean_d: np.ndarray,
        threshold_s: np.ndarray | None,
        sae_id: str,
        path: Path | None = None,
    ) -> None:
        self.cfg: dict[str, Any] = dict(cfg)
        self.arch: str = str(cfg["arch"])
        self.d_in: int = int(cfg["d_in"])
        self.d_sae: int = int(cfg["d_sae"])
        self.k: int | None = None if cfg.get("k") is None else int(cfg["k"])
        self.input_scale: float = float(cfg["input_scale"])
        f32 = np.float32
        self.W_enc_ds = np.ascontiguousarray(W_enc_ds, dtype=f32)
        self.b_enc_s = np.ascontiguousarray(b_enc_s, dtype=f32)
        self.W_dec_sd = np.ascontiguousarray(W_dec_sd, dtype=f32)
        self.b_dec_d = np.ascontiguousarray(b_dec_d, dtype=f32)
        self.input_mean_d = np.ascontiguousarray(input_mean_d, dtype=f32)
        self.threshold_s = None if threshold_s is None else np.ascontiguousarray(threshold_s, f32)
        self.sae_id = sae_id
        self.path = path
        # Fold the pre-bias into the encoder bias once: pre = x̃ W_enc + (b_enc − b_dec W_enc).
        self._b_enc_eff_s = (self.b_enc_s - self.b_dec_d @ self.W_enc_ds).astype(f32)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray], cfg: Mapping[str, Any]) -> "SAE":
        """Build an SAE from in-memory tensors named as in ``sae.safetensors`` (no validation).

        The ``sae_id`` is the hash of the bytes :func:`save_sae` would write for them.
        """
        from medsae_desktop.core.sae.checkpoint import serialize_tensors

        blob = serialize_tensors(tensors)
        return cls(
            cfg=cfg,
            W_enc_ds=tensors["W_enc"],
            b_enc_s=tensors["b_enc"],
            W_dec_sd=tensors["W_dec"],
            b_dec_d=tensors["b_dec"],
            input_mean_d=tensors.get("input_mean", np.zeros(int(cfg["d_in"]), np.float32)),
            threshold_s=tensors.get("threshold"),
            sae_id=hashlib.sha256(blob).hexdigest(),
        )

    def tensors(self) -> dict[str, np.ndarray]:
        """The weights as a ``sae.safetensors`` dict (copies are not made)."""
        out = {
            "W_enc": self.W_enc_ds,
            "b_enc": self.b_enc_s,
            "W_dec": self.W_dec_sd,
            "b_dec": self.b_dec_d,
            "input_mean": self.input_mean_d,
        }
        if self.threshold_s is not None:
            out["threshold"] = self.threshold_s
        return out

    # ---- forward ----------------------------------------------------------------------------
    def _check_input(self, x_nd: np.ndarray) -> np.ndarray:
        x_nd = np.asarray(x_nd, dtype=np.float32)
        if x_nd.ndim == 1:
            x_nd = x_nd[None, :]
        assert x_nd.ndim == 2 and x_nd.shape[1] == self.d_in, (
            f"expected (n, {self.d_in}) inputs, got {x_nd.shape}")
        return x_nd

    def normalize(self, x_nd: np.ndarray) -> np.ndarray:
        """Input normalisation x̃ = s·(x − μ) (DESIGN.md §5.2 step 1), float32 (n, d_in)."""
        x_nd = self._check_input(x_nd)
        return ((x_nd - self.input_mean_d) * np.float32(self.input_scale)).astype(np.float32)

    def pre_activations(self, x_nd: np.ndarray) -> np.ndarray:
        """Affine encoder output W_encᵀ(x̃ − b_dec) + b_enc, float32 (n, d_sae).

        Affine in x, so it may be applied to per-location embeddings for heat maps.
        """
        xt_nd = self.normalize(x_nd)
        return (xt_nd @ self.W_enc_ds + self._b_enc_eff_s).astype(np.float32, copy=False)

    def activate(self, pre_ns: np.ndarray) -> np.ndarray:
        """The architecture's activation applied row by row to pre-activations (n, d_sae)."""
        pre_ns = np.asarray(pre_ns, dtype=np.float32)
        if self.arch == "relu":
            return np.maximum(pre_ns, 0.0)
        if self.arch == "topk":
            assert self.k is not None, "topk SAE without k"
            k = min(self.k, pre_ns.shape[1])
            idx_nk = np.argpartition(-pre_ns, k - 1, axis=1)[:, :k]
            vals_nk = np.maximum(np.take_along_axis(pre_ns, idx_nk, axis=1), 0.0)
            acts_ns = np.zeros_like(pre_ns)
            np.put_along_axis(acts_ns, idx_nk, vals_nk, axis=1)
            return acts_ns
        if self.arch in THRESHOLD_ARCHS:
            assert self.threshold_s is not None, f"{self.arch} SAE without threshold"
            # ReLU first keeps the activation non-negative even for a negative threshold.
            return np.where(pre_ns > np.maximum(self.threshold_s, 0.0), pre_ns, 0.0).astype(
                np.float32)
        raise ValueError(f"unknown SAE arch {self.arch!r}")

    def encode(self, x_nd: np.ndarray) -> np.ndarray:
        """Latent activations, float32 (n, d_sae); row i depends only on input row i."""
        return self.activate(self.pre_activations(x_nd))

    def decode(self, acts_ns: np.ndarray) -> np.ndarray:
        """Reconstruction x̂̃ in the *normalised* space, float32 (n, d_in)."""
        acts_ns = np.asarray(acts_ns, dtype=np.float32)
        return (acts_ns @ self.W_dec_sd + self.b_dec_d).astype(np.float32, copy=False)

    def denormalize(self, xt_nd: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize`: x = x̃ / s + μ."""
        return (np.asarray(xt_nd, np.float32) / np.float32(self.input_scale)
                + self.input_mean_d).astype(np.float32)

    def reconstruct(self, x_nd: np.ndarray) -> np.ndarray:
        """Reconstruction x̂ back in the original embedding space, float32 (n, d_in)."""
        return self.denormalize(self.decode(self.encode(x_nd)))

    def __repr__(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (f"SAE(arch={self.arch!r}, d_in={self.d_in}, d_sae={self.d_sae}{k}, "
                f"id={self.sae_id[:12]})")
