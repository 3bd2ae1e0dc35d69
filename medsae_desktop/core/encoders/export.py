"""Export an encoder (optionally with an SAE) to one ONNX graph.

Graph (opset 17, TorchScript exporter -- the dynamo exporter fixes Swin's batch size at 1;
reference models_and_dicom.md §6.1):

=======================  ======================  ============================================
name                     shape                   meaning
=======================  ======================  ============================================
``pixels`` (input)       float32 (B, 3, 224, 224) :func:`preprocess_render` output
``embedding``            float32 (B, 512)        L2-normalised MedCLIP embedding
``patch_embeddings``     float32 (B, 49, 512)    per-location embeddings (same 1/||e||)
``sae_codes``            float32 (B, d_sae)      SAE activations (only with an SAE)
``sae_patch_preacts``    float32 (B, 49, d_sae)  per-location SAE pre-activations (ditto)
=======================  ======================  ============================================

``B`` is dynamic. Pre-processing stays outside the graph (numpy + PIL), so the graph is pure
tensor maths. The model's :class:`EncoderInfo` JSON is stored in the ONNX ``metadata_props``
under :data:`META_ENCODER` (and the SAE's id and arch under :data:`META_SAE`), so an .onnx file
is self-describing and the onnxruntime backend needs nothing else. Imports torch and onnx.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.encoders.base import ImageEncoder

logger = logging.getLogger(__name__)

#: Bump when the graph's inputs/outputs change (part of the per-user cache file name).
EXPORT_VERSION = 1
OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("embedding", "patch_embeddings")
SAE_OUTPUT_NAMES = ("sae_codes", "sae_patch_preacts")
META_ENCODER = "medsae.encoder"
META_SAE = "medsae.sae"
META_VERSION = "medsae.export_version"


def sae_metadata(sae: Any) -> dict[str, Any]:
    """What the graph records about its SAE (id, arch, sizes)."""
    cfg = sae.cfg
    return {"sae_id": getattr(sae, "sae_id", None), "arch": cfg["arch"],
            "d_in": int(np.shape(sae.W_enc_ds)[0]), "d_sae": int(np.shape(sae.W_enc_ds)[1]),
            "k": cfg.get("k")}


def export_onnx(encoder: ImageEncoder, out_path: str | os.PathLike[str], sae: Any = None,
                batch_size: int = 2, check: bool = True) -> Path:
    """Write ``encoder`` (+ ``sae``) as one ONNX graph with a dynamic batch axis.

    Parameters
    ----------
    encoder
        A torch-backend encoder (:class:`~.torch_backend.TorchEncoder`); its fp32 module is
        exported whatever its own precision and device.
    out_path
        Destination ``.onnx`` (written to a temporary name, then renamed: a crash never
        leaves a half-written model where a reader would pick it up).
    sae
        Optional SAE with ``W_enc_ds, b_enc_s, b_dec_d, input_mean_d, input_scale,
        threshold_s, cfg`` (e.g. :func:`medsae_desktop.core.sae.load_sae`); adds the
        ``sae_codes`` and ``sae_patch_preacts`` outputs.
    batch_size
        Batch of the tracing input (any value; the exported batch axis is dynamic).
    check
        Run the exported graph with onnxruntime on the tracing input and require
        max |onnx - torch| <= 1e-4 on every output.

    Returns
    -------
    pathlib.Path
        ``out_path``.
    """
    import copy

    import onnx
    import torch

    from medsae_desktop.core.encoders.heads import EncoderWithSAE, SAEHead
    from medsae_desktop.core.encoders.torch_backend import TorchEncoder
    from medsae_desktop.core.errors import MedsaeError

    if not isinstance(encoder, TorchEncoder):
        raise TypeError(f"export needs a torch-backend encoder, got {type(encoder).__name__}")
    module = copy.deepcopy(encoder.module).float().cpu().to(memory_format=torch.contiguous_format)
    names = list(OUTPUT_NAMES)
    if sae is not None:
        d_in = int(np.shape(sae.W_enc_ds)[0])
        if d_in != encoder.info.d_out:
            raise MedsaeError(f"SAE takes {d_in}-d inputs, encoder gives {encoder.info.d_out}-d",
                              getattr(sae, "path", None))
        module = EncoderWithSAE(module, SAEHead(sae))
        names += SAE_OUTPUT_NAMES
    module.eval()

    size = int(encoder.info.preprocessing["size"])
    gen = torch.Generator().manual_seed(0)
    x_bchw = torch.randn(batch_size, 3, size, size, generator=gen)
    dynamic = {INPUT_NAME: {0: "batch"}} | {n: {0: "batch"} for n in names}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with torch.inference_mode():
            ref = [t.numpy() for t in module(x_bchw)]
        with warnings.catch_warnings():
            # Expected: shape checks inside HF Swin become trace constants. Only the batch
            # axis is dynamic; the 224 x 224 input size is fixed by design.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # The TorchScript exporter is chosen on purpose (the dynamo one fixes Swin's
            # batch at 1), so its deprecation notice is noise for our users.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, (x_bchw,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=names,
                              dynamic_axes=dynamic, do_constant_folding=True)
        model = onnx.load(str(tmp))
        info = encoder.info.replace(backend="onnx", precision="fp32")
        meta = {META_ENCODER: json.dumps(info.to_json(), sort_keys=True),
                META_VERSION: str(EXPORT_VERSION)}
        if sae is not None:
            meta[META_SAE] = json.dumps(sae_metadata(sae), sort_keys=True)
        del model.metadata_props[:]
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        model.producer_name = "medsae-desktop"
        onnx.save(model, str(tmp))
        if check:
            _check_parity(tmp, x_bchw.numpy(), names, ref)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("exported %s to %s", encoder.info.key, out_path)
    return out_path


def _check_parity(path: Path, x_bchw: np.ndarray, names: list[str],
                  ref: list[np.ndarray], atol: float = 1e-4) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(names, {INPUT_NAME: x_bchw})
    for name, g, r in zip(names, got, ref):
        diff = float(np.max(np.abs(g - r))) if g.size else 0.0
        if g.shape != r.shape or not diff <= atol:
            raise RuntimeError(f"ONNX output {name} differs from torch: shape {g.shape} vs "
                               f"{r.shape}, max abs diff {diff:.3g}")
