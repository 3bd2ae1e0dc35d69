"""Preprocessing equals the official MedCLIPProcessor; the package imports without torch."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medsae_desktop.core.encoders import (
    IMG_MEAN,
    IMG_STD,
    PREPROCESSING,
    letterbox_geometry,
    preprocess_render,
    preprocess_renders,
)


def official_medclip_preprocess(img_hw: np.ndarray) -> np.ndarray:
    """MedCLIPFeatureExtractor (transformers 4.24 semantics), re-typed from the reference.

    pad_img: ``Image.new('L', (size, size), 0).paste(img, (int((size-x)/2), int((size-y)/2)))``
    with ``size = max(224, x, y)``; resize (224, 224) BICUBIC; ``to_numpy_array`` rescales
    ``uint8 -> float32 * (1/255)``; normalize ``(image - mean) / std`` with float32 mean/std.
    """
    img = Image.fromarray(img_hw)
    x, y = img.size
    size = max(224, x, y)
    new_im = Image.new("L", (size, size), 0)
    new_im.paste(img, (int((size - x) / 2), int((size - y) / 2)))
    new_im = new_im.resize((224, 224), resample=Image.BICUBIC)
    arr = np.array(new_im)
    arr = arr.astype(np.float32) * (1 / 255.0)
    mean = np.array(0.5862785803043838).astype(arr.dtype)
    std = np.array(0.27950088968644304).astype(arr.dtype)
    arr = (arr - mean) / std
    return np.repeat(arr[None], 3, axis=0)  # the model repeats 1 -> 3 channels


@pytest.mark.parametrize("h,w", [(300, 250), (251, 640), (224, 224), (100, 150), (1, 1),
                                 (513, 512)])
def test_matches_official_processor_bit_for_bit(rng, h, w):
    img = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    got = preprocess_render(img)
    assert got.dtype == np.float32 and got.shape == (3, 224, 224)
    np.testing.assert_array_equal(got, official_medclip_preprocess(img))


def test_small_image_is_padded_not_enlarged(rng):
    img = rng.integers(0, 256, size=(100, 150), dtype=np.uint8)
    side, off_x, off_y = letterbox_geometry(100, 150)
    assert (side, off_x, off_y) == (224, 37, 62)
    x = preprocess_render(img)[0]
    u8 = np.rint(x * IMG_STD * 255 + IMG_MEAN * 255)
    np.testing.assert_array_equal(u8[off_y:off_y + 100, off_x:off_x + 150], img)
    black = (0 - IMG_MEAN) / IMG_STD
    assert np.allclose(x[:off_y], black) and np.allclose(x[:, :off_x], black)
    assert np.allclose(x[off_y + 100:], black) and np.allclose(x[:, off_x + 150:], black)


def test_letterbox_geometry_odd_sizes():
    assert letterbox_geometry(1841, 1955) == (1955, 0, 57)  # (1955-1841)//2 = 57
    assert letterbox_geometry(1001, 300) == (1001, 350, 0)
    assert letterbox_geometry(224, 224) == (224, 0, 0)
    with pytest.raises(ValueError):
        letterbox_geometry(0, 10)


def test_wide_image_is_centred_vertically():
    img = np.full((100, 400), 255, np.uint8)
    x = preprocess_render(img)[0]  # square side 400, image rows 150..249 -> 84..140 of 224
    col = x[:, 112]
    assert col[:80].max() < 0 and col[90:130].min() > 1.0 and col[145:].max() < 0


def test_rejects_bad_input(rng):
    with pytest.raises(ValueError, match="uint8"):
        preprocess_render(rng.random((50, 50)))
    with pytest.raises(ValueError, match="2-D"):
        preprocess_render(np.zeros((4, 50, 50), np.uint8))
    assert preprocess_renders([]).shape == (0, 3, 224, 224)


def test_preprocessing_description():
    assert PREPROCESSING["size"] == 224
    assert PREPROCESSING["mean"] == 0.5862785803043838
    assert PREPROCESSING["std"] == 0.27950088968644304
    assert PREPROCESSING["pad"] == "square-black-centred"
    assert PREPROCESSING["resize"] == "bicubic"


def test_importing_encoders_does_not_import_torch():
    code = ("import sys; import medsae_desktop.core.encoders as e; "
            "import medsae_desktop.core.encoders.onnx_backend, "
            "medsae_desktop.core.encoders.checkpoint, medsae_desktop.core.encoders.demo; "
            "bad = [m for m in ('torch', 'onnxruntime', 'transformers', 'PySide6') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
