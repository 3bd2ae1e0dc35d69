"""MedCLIP input preprocessing in numpy + PIL (no torch), identical to ``MedCLIPProcessor``.

The official ``MedCLIPFeatureExtractor`` (transformers 4.24 semantics; reference
models_and_dicom.md §1.3) does, on an 8-bit grayscale PIL image:

1. pad onto a black ``L`` square of side ``S = max(224, w, h)``, pasted at
   ``((S - w) // 2, (S - h) // 2)`` -- smaller images are padded, never enlarged;
2. resize to 224 x 224 with PIL bicubic (``Image.BICUBIC``);
3. centre-crop 224 (a no-op);
4. ``x = float32(u8) * float32(1/255)``, then ``(x - mean) / std`` in float32 with one scalar
   mean/std;
5. the model repeats the single channel to 3.

We reproduce each step with the same libraries and dtypes, so the result is bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

#: Side of the square network input.
IMG_SIZE = 224
#: Single-channel mean and std after scaling to [0, 1] (medclip/constants.py).
IMG_MEAN = 0.5862785803043838
IMG_STD = 0.27950088968644304

#: JSON description of the transform (goes into :class:`EncoderInfo` and caches).
PREPROCESSING: dict[str, object] = {
    "size": IMG_SIZE,
    "mean": IMG_MEAN,
    "std": IMG_STD,
    "pad": "square-black-centred",
    "resize": "bicubic",
    "input": "uint8-grayscale-monochrome2",
    "channels": 3,
}


def letterbox_geometry(h: int, w: int) -> tuple[int, int, int]:
    """Where an ``h x w`` image sits in the padded square the network sees.

    The 224 x 224 network input is a resized copy of a black square of side ``side``
    whose pixel ``(off_y + y, off_x + x)`` is image pixel ``(y, x)``. A 7 x 7 map therefore
    covers the square; to overlay it on the image, upsample it to ``side x side``, crop
    ``[off_y:off_y + h, off_x:off_x + w]``.

    Parameters
    ----------
    h, w
        Image height and width in pixels.

    Returns
    -------
    side, off_x, off_y : int
        Square side ``max(224, w, h)`` and the image's offset in it.
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    side = max(IMG_SIZE, int(w), int(h))
    return side, (side - int(w)) // 2, (side - int(h)) // 2


def _to_u8_hw(render_hw: np.ndarray) -> np.ndarray:
    a = np.asarray(render_hw)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        raise ValueError(f"render must be a 2-D grayscale image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"render must be uint8 (the 8-bit display render), got {a.dtype}")
    return np.ascontiguousarray(a)


def preprocess_render(render_hw: np.ndarray) -> np.ndarray:
    """Turn an 8-bit grayscale render into MedCLIP network input.

    Parameters
    ----------
    render_hw
        uint8 ``(H, W)`` image, MONOCHROME2 (bright = dense), any size.

    Returns
    -------
    np.ndarray
        float32 ``(3, 224, 224)``: the normalised single channel repeated 3 times.
    """
    u8_hw = _to_u8_hw(render_hw)
    h, w = u8_hw.shape
    side, off_x, off_y = letterbox_geometry(h, w)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(Image.fromarray(u8_hw), (off_x, off_y))
    if side != IMG_SIZE:
        canvas = canvas.resize((IMG_SIZE, IMG_SIZE), resample=Image.BICUBIC)
    x_hw = np.asarray(canvas).astype(np.float32) * np.float32(1 / 255.0)
    x_hw = (x_hw - np.float32(IMG_MEAN)) / np.float32(IMG_STD)
    return np.repeat(x_hw[None], 3, axis=0)


def preprocess_renders(renders_hw: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`preprocess_render` over a list, stacked to float32 ``(B, 3, 224, 224)``."""
    if len(renders_hw) == 0:
        return np.zeros((0, 3, IMG_SIZE, IMG_SIZE), np.float32)
    return np.stack([preprocess_render(r) for r in renders_hw])
