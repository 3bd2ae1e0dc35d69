"""Import SAEs trained elsewhere into our checkpoint format (DESIGN.md §4.2).

Supported sources:

* **SAELens** folders: ``cfg.json`` + ``sae_weights.safetensors`` (architectures standard,
  topk, jumprelu; batchtopk is saved by SAELens as jumprelu). Read with safetensors, no torch.
* **dictionary_learning** ``ae.pt`` (+ optional ``config.json``): AutoEncoder (standard),
  AutoEncoderTopK, BatchTopKSAE, MatryoshkaBatchTopKSAE, JumpReluAutoEncoder. Read with
  ``torch.load(weights_only=True)`` only — never unpickling code — so torch is needed.

Our forward always subtracts ``b_dec`` before the encoder; SAEs that do not
(``apply_b_dec_to_input = False``) are converted exactly by folding ``b_dec·W_enc`` into
``b_enc``. Imported SAEs get the identity input normalisation (μ = 0, s = 1) unless the source
records its own, so they see the same inputs as in their original library.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.sae.checkpoint import CREATED_BY, save_sae


def _fold_bias(W_enc_ds: np.ndarray, b_enc_s: np.ndarray, b_dec_d: np.ndarray) -> np.ndarray:
    """b_enc' such that (x − b_dec)·W_enc + b_enc' = x·W_enc + b_enc."""
    return (b_enc_s.astype(np.float64) + b_dec_d.astype(np.float64) @ W_enc_ds).astype(np.float32)


def import_saelens(src_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Convert a SAELens SAE folder into a medsae SAE folder.

    Raises :class:`MedsaeError` for missing files, unsupported architectures or shapes.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    src = Path(src_dir)
    cfg_path, w_path = src / "cfg.json", src / "sae_weights.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise MedsaeError("not a SAELens SAE folder (needs cfg.json and "
                          "sae_weights.safetensors)", src)
    try:
        scfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        tensors = load_file(str(w_path))
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise MedsaeError(f"unreadable SAELens SAE ({exc})", src) from exc
    arch_src = str(scfg.get("architecture", "standard")).lower()
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(arch_src)
    if arch is None:
        raise MedsaeError(f"SAELens architecture {arch_src!r} is not supported "
                          "(standard, topk, jumprelu)", src)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if name not in tensors:
            raise MedsaeError(f"sae_weights.safetensors lacks {name}", src)
    W_enc = tensors["W_enc"].astype(np.float32)
    b_enc = tensors["b_enc"].astype(np.float32)
    W_dec = tensors["W_dec"].astype(np.float32)
    b_dec = tensors["b_dec"].astype(np.float32)
    d_in, d_sae = W_enc.shape
    if scfg.get("apply_b_dec_to_input", True) is False:
        b_enc = _fold_bias(W_enc, b_enc, b_dec)
    k = None
    if arch == "topk":
        k = scfg.get("k") or (scfg.get("activation_fn_kwargs") or {}).get("k")
        if k is None:
            raise MedsaeError("SAELens topk SAE without k in cfg.json", src)
        k = int(k)
    out = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec,
           "input_mean": np.zeros(d_in, np.float32)}
    if arch == "jumprelu":
        if "threshold" in tensors:
            out["threshold"] = tensors["threshold"].astype(np.float32)
        elif "log_threshold" in tensors:
            out["threshold"] = np.exp(tensors["log_threshold"]).astype(np.float32)
        else:
            raise MedsaeError("SAELens jumprelu SAE without threshold", src)
    notes = []
    norm = scfg.get("normalize_activations")
    if norm not in (None, "none"):
        notes.append(f"source normalize_activations={norm!r}: its runtime scaling is not stored "
                     "in the weights; inputs are used unscaled")
    cfg = {
        "arch": arch, "d_in": int(d_in), "d_sae": int(d_sae), "k": k, "l1": None,
        "input_scale": 1.0, "encoder": {"key": "imported", "source_model":
                                        scfg.get("model_name"), "hook": scfg.get("hook_name")},
        "train": {}, "metrics": {}, "created_by": CREATED_BY, "complete": True,
        "imported_from": {"format": "saelens", "path": str(src), "architecture": arch_src,
                          "notes": notes},
    }
    return save_sae(out_dir, out, cfg)


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def import_dictionary_learning(ae_path: str | os.PathLike[str],
                               out_dir: str | os.PathLike[str]) -> Path:
    """Convert a dictionary_learning ``ae.pt`` into a medsae SAE folder.

    The file is opened with ``torch.load(weights_only=True)``: tensors only, no code.
    """
    import pickle

    import torch

    src = Path(ae_path)
    if not src.is_file():
        raise MedsaeError("dictionary_learning checkpoint not found", src)
    try:
        sd = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise MedsaeError("not a plain-tensor dictionary_learning checkpoint (loaded with "
                          f"weights_only=True): {' '.join(str(exc).split())[:120]}", src) from exc
    if not isinstance(sd, dict):
        raise MedsaeError("checkpoint is not a state dict", src)
    extra: dict[str, Any] = {}
    conf = src.with_name("config.json")
    if conf.is_file():
        try:
            extra = json.loads(conf.read_text(encoding="utf-8")).get("trainer", {})
        except (json.JSONDecodeError, OSError):
            extra = {}
    keys = set(sd)
    k = None
    threshold = None
    if {"encoder.weight", "decoder.weight", "bias"} <= keys:  # AutoEncoder (standard)
        W_enc = _np(sd["encoder.weight"]).T
        b_enc = _np(sd["encoder.bias"])
        W_dec = _np(sd["decoder.weight"]).T
        b_dec = _np(sd["bias"])
        arch = "relu"
    elif {"encoder.weight", "decoder.weight", "b_dec", "k"} <= keys:  # TopK / BatchTopK
        W_enc = _np(sd["encoder.weight"]).T
        b_enc = _np(sd["encoder.bias"])
        W_dec = _np(sd["decoder.weight"]).T
        b_dec = _np(sd["b_dec"])
        k = int(sd["k"])
        thr = float(sd["threshold"]) if "threshold" in sd else -1.0
        name = str(extra.get("dict_class", ""))
        if "BatchTopK" in name or ("TopK" not in name and thr >= 0):
            arch = "batchtopk"
            threshold = np.full(W_enc.shape[1], max(thr, 0.0), np.float32)
        else:
            arch = "topk"
    elif {"W_enc", "W_dec", "b_dec", "group_sizes"} <= keys:  # Matryoshka BatchTopK
        W_enc, b_enc, W_dec, b_dec = (_np(sd[n]) for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
        k = int(sd["k"])
        arch = "matryoshka"
        threshold = np.full(W_enc.shape[1], max(float(sd["threshold"]), 0.0), np.float32)
        extra["group_sizes"] = [int(v) for v in sd["group_sizes"].tolist()]
    elif {"W_enc", "W_dec", "b_dec", "threshold"} <= keys:  # JumpReluAutoEncoder
        W_enc, b_enc, W_dec, b_dec = (_np(sd[n]) for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
        # apply_b_dec_to_input is False by default there: pre = x·W_enc + b_enc.
        b_enc = _fold_bias(W_enc, b_enc, b_dec)
        arch = "jumprelu"
        threshold = _np(sd["threshold"])
    else:
        raise MedsaeError("unrecognised dictionary_learning state dict (keys: "
                          f"{', '.join(sorted(keys))[:150]})", src)
    d_in, d_sae = W_enc.shape
    if W_dec.shape != (d_sae, d_in):
        raise MedsaeError(f"decoder shape {W_dec.shape} does not match encoder {W_enc.shape}",
                          src)
    out = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec,
           "input_mean": np.zeros(d_in, np.float32)}
    if threshold is not None:
        out["threshold"] = threshold
    if arch in ("batchtopk", "matryoshka") and float(threshold.max()) <= 0:
        raise MedsaeError(f"{arch} checkpoint has no inference threshold (trained without one); "
                          "single-image results would depend on the batch", src)
    cfg = {
        "arch": arch, "d_in": int(d_in), "d_sae": int(d_sae), "k": k,
        "l1": extra.get("l1_penalty"), "input_scale": 1.0,
        "encoder": {"key": "imported", "source_model": extra.get("lm_name")},
        "train": {}, "metrics": {}, "created_by": CREATED_BY, "complete": True,
        "prefix_sizes": (np.cumsum(extra["group_sizes"]).tolist()
                         if "group_sizes" in extra else None),
        "imported_from": {"format": "dictionary_learning", "path": str(src),
                          "trainer": {k2: v for k2, v in extra.items()
                                      if isinstance(v, (str, int, float, bool, type(None)))}},
    }
    return save_sae(out_dir, out, cfg)


def import_sae(src: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Import a SAELens folder or a dictionary_learning ``ae.pt`` (detected by its files)."""
    src = Path(src)
    if src.is_dir() and (src / "sae_weights.safetensors").is_file():
        return import_saelens(src, out_dir)
    if src.is_dir() and (src / "ae.pt").is_file():
        return import_dictionary_learning(src / "ae.pt", out_dir)
    if src.is_file() and src.suffix == ".pt":
        return import_dictionary_learning(src, out_dir)
    raise MedsaeError("not a SAELens folder or dictionary_learning ae.pt", src)
