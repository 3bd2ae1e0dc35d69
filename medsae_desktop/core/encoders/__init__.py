"""Image encoders: MedCLIP ResNet-50 and Swin-T (torch), onnxruntime backend, demo encoder.

Public API (importing this package never imports torch or onnxruntime)::

    enc = make_encoder("demo")                     # or "medclip-resnet"/"medclip-swin"
    pixels_bchw = preprocess_renders([render_hw])  # official MedCLIPProcessor, numpy + PIL
    res = enc.encode(pixels_bchw, patches=True)    # EncodeResult (numpy float32)
    res.embeddings_bd, res.patches_bpd             # (B, 512) unit rows, (B, 49, 512)
    enc.info.to_json()                             # what the cache stores as ``encoder``

See :mod:`.base` for the interface, :mod:`.preprocessing` for the input transform and the
letterbox geometry heat-map overlays need, :mod:`.export` for ONNX export.
"""

from medsae_desktop.core.encoders.base import (
    ENCODER_KEYS,
    EncodeResult,
    EncoderInfo,
    ImageEncoder,
)
from medsae_desktop.core.encoders.factory import list_encoders, make_encoder
from medsae_desktop.core.encoders.preprocessing import (
    IMG_MEAN,
    IMG_SIZE,
    IMG_STD,
    PREPROCESSING,
    letterbox_geometry,
    preprocess_render,
    preprocess_renders,
)

__all__ = [
    "ENCODER_KEYS",
    "IMG_MEAN",
    "IMG_SIZE",
    "IMG_STD",
    "PREPROCESSING",
    "EncodeResult",
    "EncoderInfo",
    "ImageEncoder",
    "letterbox_geometry",
    "list_encoders",
    "make_encoder",
    "preprocess_render",
    "preprocess_renders",
]
