"""Tests of the display pipeline (core/images.py, DESIGN.md §5.1) on real DICOM test files.

Expected values come from independent computations: pydicom's own LUT/windowing functions,
LUT tables read straight from the data sets, and hand-written formulas in float64. The chest
radiograph RG1 and the LUT files come from the pydicom-data wheel (offline).
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.images import (
    IMAGE_EXTENSIONS,
    HeaderSummary,
    LoadedImage,
    Window,
    apply_window,
    image_content_hash,
    is_probably_image,
    read_header,
    read_image,
    save_png,
)

PYDICOM_TEST_DIR = Path(pydicom.__file__).parent / "data" / "test_files"
CR_MONO1_PATH = PYDICOM_TEST_DIR / "dicomdirtests" / "77654033" / "CR1" / "6154"

# Regions of the full-resolution RG1 render (rows, columns), picked by looking at the image:
# both lung fields, the spine/mediastinum column and the right hemidiaphragm/liver.
RIGHT_LUNG = (slice(480, 800), slice(360, 600))
LEFT_LUNG = (slice(400, 720), slice(1200, 1480))
SPINE = (slice(600, 1400), slice(840, 980))
LIVER = (slice(1450, 1750), slice(200, 600))

RG1_PHI = ("CompressedSamples^RG1", "19400305", "Philips Medical Systems Hamburg", "9RG1")


def data_path(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name} missing: pydicom-data must be installed"
    return path


@pytest.fixture(scope="module")
def rg1() -> LoadedImage:
    return read_image(data_path("RG1_UNCR.dcm"))


@pytest.fixture(scope="module")
def rg1_stored_hw() -> np.ndarray:
    return pixel_array(data_path("RG1_UNCR.dcm"))


def to_8bit(unit: np.ndarray) -> np.ndarray:
    """Independent float64 quantisation: [0, 1] -> round half up -> uint8."""
    return np.floor(np.clip(unit, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def linear_window_unit(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window written directly, in float64, output in [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def assert_nearly_equal_uint8(actual: np.ndarray, expected: np.ndarray, min_exact: float = 0.999):
    """Equal up to 1 grey level where float32 and float64 round a .5 boundary differently."""
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"max difference {diff.max()}"
    assert (diff == 0).mean() >= min_exact, f"only {(diff == 0).mean():.5f} exactly equal"


def save_modified(src: str, dst: Path, **changes) -> Path:
    """Copy a DICOM file with some attributes changed (None deletes)."""
    ds = dcmread(src)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


# ------------------------------------------------------------------------------------------
# The real chest radiograph RG1 (MONOCHROME1, 15-bit, stored window 15000/30000)
# ------------------------------------------------------------------------------------------


def test_rg1_renders_bones_bright_and_lungs_dark(rg1):
    render_hw = rg1.render_hw
    assert render_hw.dtype == np.uint8 and render_hw.shape == (1955, 1841)
    assert rg1.invert is True
    assert rg1.default_window == Window(15000.0, 30000.0, "window 1")
    lungs = (render_hw[RIGHT_LUNG].mean() + render_hw[LEFT_LUNG].mean()) / 2
    assert render_hw[SPINE].mean() > lungs + 50
    assert render_hw[LIVER].mean() > lungs + 50
    # The auto (percentile) window keeps the polarity too (reference §4.1 step 7).
    auto_hw = apply_window(rg1, Window(12710.5, 21755.0))
    auto_lungs = (auto_hw[RIGHT_LUNG].mean() + auto_hw[LEFT_LUNG].mean()) / 2
    assert auto_hw[SPINE].mean() > auto_lungs + 80


def test_rg1_render_matches_hand_computation(rg1, rg1_stored_hw):
    # No rescale in RG1: display values are the stored values.
    np.testing.assert_array_equal(rg1.display_hw, rg1_stored_hw.astype(np.float32))
    expected = 255 - to_8bit(linear_window_unit(rg1_stored_hw, 15000, 30000))
    assert_nearly_equal_uint8(rg1.render_hw, expected)


def test_rg1_render_matches_pydicom_voi_lut(rg1, rg1_stored_hw):
    ds = dcmread(data_path("RG1_UNCR.dcm"), stop_before_pixels=True)
    voi = apply_voi_lut(rg1_stored_hw, ds)  # float64 in [0, 2**15 - 1]
    expected = 255 - to_8bit(voi / (2**15 - 1))
    assert_nearly_equal_uint8(rg1.render_hw, expected)


def test_rg1_jpeg2000_lossless_decodes_to_the_same_pixels(rg1):
    j2k = read_image(data_path("RG1_J2KR.dcm"))
    np.testing.assert_array_equal(j2k.display_hw, rg1.display_hw)
    np.testing.assert_array_equal(j2k.render_hw, rg1.render_hw)
    assert image_content_hash(j2k) == image_content_hash(rg1)
    assert "JPEG 2000" in j2k.header.fields["Transfer syntax"]


def test_default_render_equals_apply_window_none(rg1):
    again_hw = apply_window(rg1)
    np.testing.assert_array_equal(again_hw, rg1.render_hw)
    assert again_hw.flags.writeable and again_hw is not rg1.render_hw
    assert not rg1.render_hw.flags.writeable and not rg1.display_hw.flags.writeable
    np.testing.assert_array_equal(apply_window(rg1, rg1.default_window), rg1.render_hw)


def test_apply_window_rejects_bad_windows(rg1):
    for window in (Window(100, 0), Window(100, -5), Window(float("nan"), 10),
                   Window(0, float("inf"))):
        with pytest.raises(MedsaeError, match="invalid window"):
            apply_window(rg1, window)


def test_content_hash_is_stable(rg1):
    digest = image_content_hash(rg1)
    assert len(digest) == 64 and int(digest, 16) >= 0
    # Pinned: a change here silently invalidates every embedding cache id (DESIGN §4.1).
    assert digest == "839d2f889869a87529b4e38e218559972f73428bc6e1b43167a0442c79ea591e"


def test_content_hash_definition(rg1, rg1_stored_hw):
    import hashlib

    expected = hashlib.sha256(
        b"medsae-pixels-v1:float32:1955x1841:" + rg1_stored_hw.astype("<f4").tobytes()
    ).hexdigest()
    assert image_content_hash(rg1) == expected


# ------------------------------------------------------------------------------------------
# LUT paths
# ------------------------------------------------------------------------------------------


def test_modality_lut_sequence_mlut_18():
    path = data_path("mlut_18.dcm")
    ds = dcmread(path)
    stored_hw = ds.pixel_array
    image = read_image(path)
    # Independent 1: pydicom's implementation.
    np.testing.assert_array_equal(image.display_hw, apply_modality_lut(stored_hw, ds))
    # Independent 2: the table read straight from the file (US LUTData, first mapped -2048).
    item = ds.ModalityLUTSequence[0]
    n_entries, first_mapped, _bits = item.LUTDescriptor
    table = np.asarray(item.LUTData, dtype=np.int64)
    index_hw = np.clip(stored_hw.astype(np.int64) - first_mapped, 0, n_entries - 1)
    np.testing.assert_array_equal(image.display_hw, table[index_hw])
    assert image.display_hw[0, 0] == table[int(stored_hw[0, 0]) - first_mapped]
    # No stored window: the 0.5-99.5 percentile window of the modality values.
    lo, hi = np.percentile(table[index_hw].astype(np.float64), [0.5, 99.5])
    assert image.default_window.center == pytest.approx((lo + hi) / 2)
    assert image.default_window.width == pytest.approx(hi - lo)
    assert image.windows == ()
    expected = to_8bit(linear_window_unit(table[index_hw], (lo + hi) / 2, hi - lo))
    assert_nearly_equal_uint8(image.render_hw, expected)
    assert image.header.fields["Modality LUT sequence"] == "1 table(s)"


def test_voi_lut_sequence_vlut_04():
    path = data_path("vlut_04.dcm")
    ds = dcmread(path)
    stored_hw = ds.pixel_array
    image = read_image(path)
    assert image.voi_lut is not None
    item = ds.VOILUTSequence[0]
    n_entries, first_mapped, bits = item.LUTDescriptor
    table = np.asarray(item.LUTData, dtype=np.int64)
    index_hw = np.clip(stored_hw.astype(np.int64) - first_mapped, 0, n_entries - 1)
    expected = to_8bit(table[index_hw] / (2**bits - 1))
    np.testing.assert_array_equal(image.render_hw, expected)
    # pydicom's VOI LUT, scaled to 8 bits, agrees.
    np.testing.assert_array_equal(
        image.render_hw, to_8bit(apply_voi_lut(stored_hw, ds) / (2**bits - 1))
    )
    # This particular LUT is x -> 257 x, so the render is the stored 8-bit image itself.
    np.testing.assert_array_equal(image.render_hw, stored_hw)
    # An explicit window bypasses the LUT (the viewer's window/level).
    windowed_hw = apply_window(image, Window(100, 50))
    assert windowed_hw[stored_hw > 130].min() == 255
    assert windowed_hw[stored_hw < 70].max() == 0


def test_voi_lut_sequence_preferred_over_window(tmp_path):
    # A LUT that inverts, plus a stored window: the LUT makes the default render
    # (pydicom prefer_lut=True), the window is still offered.
    ds = dcmread(data_path("vlut_04.dcm"))
    item = ds.VOILUTSequence[0]
    item.LUTData = [int(v) for v in (255 - np.arange(256)) * 257]
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.save_as(tmp_path / "inv_lut.dcm")
    image = read_image(tmp_path / "inv_lut.dcm")
    stored_hw = ds.pixel_array
    np.testing.assert_array_equal(image.render_hw, 255 - stored_hw)
    assert image.windows == (Window(128.0, 256.0, "window 1"),)
    assert image.default_window == image.windows[0]
    assert_nearly_equal_uint8(
        apply_window(image, image.windows[0]),
        to_8bit(linear_window_unit(stored_hw, 128, 256)),
    )


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_functions_match_pydicom(tmp_path, function):
    src = data_path("MR_small.dcm")  # signed 16-bit, WC 600 / WW 1600
    path = save_modified(src, tmp_path / "mr.dcm", VOILUTFunction=function)
    ds = dcmread(path)
    stored_hw = ds.pixel_array
    image = read_image(path)
    assert image.voi_function == function
    voi = apply_voi_lut(stored_hw, ds)  # output range [-2**15, 2**15 - 1] for signed data
    expected = to_8bit((voi + 2**15) / (2**16 - 1))
    assert_nearly_equal_uint8(image.render_hw, expected, min_exact=0.99)


# ------------------------------------------------------------------------------------------
# MONOCHROME1 (inverted exactly once), windows, padding
# ------------------------------------------------------------------------------------------


def cr_hand_render(stored_hw: np.ndarray) -> np.ndarray:
    """6154 by hand: rescale 0.684/200, LINEAR window 1600/2800, then MONOCHROME1 inversion."""
    modality = stored_hw.astype(np.float64) * 0.684 + 200.0
    return 255 - to_8bit(linear_window_unit(modality, 1600.0, 2800.0))


def test_monochrome1_cr_inverted_exactly_once():
    ds = dcmread(CR_MONO1_PATH)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored_hw = ds.pixel_array
    image = read_image(CR_MONO1_PATH)
    np.testing.assert_allclose(image.display_hw, stored_hw * 0.684 + 200.0, rtol=1e-6)
    expected = cr_hand_render(stored_hw)
    np.testing.assert_array_equal(image.render_hw, expected)
    # Pixel (0, 0) spelled out: 1994 -> 1563.896 -> 124.26 -> 124 -> inverted 131.
    assert stored_hw[0, 0] == 1994 and image.render_hw[0, 0] == 131
    not_inverted = to_8bit(linear_window_unit(stored_hw * 0.684 + 200.0, 1600.0, 2800.0))
    assert not np.array_equal(image.render_hw, not_inverted)


def test_presentation_lut_inverse_is_the_same_inversion(tmp_path):
    path = save_modified(str(CR_MONO1_PATH), tmp_path / "cr_inverse.dcm",
                         PresentationLUTShape="INVERSE")
    image = read_image(path)
    np.testing.assert_array_equal(image.render_hw, cr_hand_render(dcmread(path).pixel_array))
    assert image.warnings == ()


def test_presentation_lut_inverse_on_monochrome2_is_ignored_with_warning(tmp_path):
    path = save_modified(data_path("MR_small.dcm"), tmp_path / "mr_inverse.dcm",
                         PresentationLUTShape="INVERSE")
    image = read_image(path)
    plain = read_image(data_path("MR_small.dcm"))
    np.testing.assert_array_equal(image.render_hw, plain.render_hw)
    assert any("PresentationLUTShape INVERSE" in w for w in image.warnings)


def test_multiple_windows_listed_first_is_default():
    image = read_image(data_path("J2K_pixelrep_mismatch.dcm"))
    assert [(w.center, w.width) for w in image.windows] == [(40, 100), (40, 100), (40, 200)]
    assert image.default_window == image.windows[0]
    np.testing.assert_array_equal(image.render_hw, apply_window(image, image.windows[0]))
    assert not np.array_equal(apply_window(image, image.windows[2]), image.render_hw)
    overlay = read_image(data_path("examples_overlay.dcm"))
    assert [w.explanation for w in overlay.windows] == ["WINDOW1", "WINDOW2"]
    assert [(w.center, w.width) for w in overlay.windows] == [(450, 790), (200, 443)]


def test_padding_is_masked_on_stored_values_and_black():
    path = data_path("693_J2KI.dcm")  # CT, PixelPaddingValue -2000, rescale 1/-1024
    stored_hw = pixel_array(path)
    image = read_image(path)
    expected_mask = stored_hw == -2000
    assert expected_mask.sum() == 494
    np.testing.assert_array_equal(image.padding_mask_hw, expected_mask)
    assert (image.render_hw[expected_mask] == 0).all()
    # Black because it is padding, not because of the window: centre the window on the
    # padding value (-2000 * 1 - 1024) and padding still renders 0 while its neighbours in
    # value do not.
    low_hw = apply_window(image, Window(-3024.0, 4000.0))
    assert (low_hw[expected_mask] == 0).all()
    assert low_hw[~expected_mask].min() > 0
    valid = image.display_hw[~expected_mask]
    assert image.value_range == (float(valid.min()), float(valid.max()))


def test_percentile_window_ignores_padding(tmp_path):
    path = save_modified(data_path("693_J2KI.dcm"), tmp_path / "nowin.dcm",
                         WindowCenter=None, WindowWidth=None)
    image = read_image(path)
    ds = dcmread(path)
    stored_hw = ds.pixel_array
    modality = stored_hw.astype(np.float64) - 1024.0
    lo, hi = np.percentile(modality[stored_hw != -2000], [0.5, 99.5])
    assert image.windows == ()
    assert image.default_window.center == pytest.approx((lo + hi) / 2)
    assert image.default_window.width == pytest.approx(hi - lo)
    lo_all, _ = np.percentile(modality, [0.5, 99.5])
    assert lo_all != pytest.approx(lo)  # the padding would have pulled the window down


def test_padding_black_after_monochrome1_inversion(tmp_path):
    ds = dcmread(CR_MONO1_PATH)
    ds.add_new(0x00280120, "US", 1994)  # PixelPaddingValue (VR US because unsigned data)
    path = tmp_path / "cr_pad.dcm"
    ds.save_as(path)
    image = read_image(path)
    stored_hw = dcmread(path).pixel_array
    expected = cr_hand_render(stored_hw)
    expected[stored_hw == 1994] = 0  # would be 131 (light grey) without the padding rule
    np.testing.assert_array_equal(image.render_hw, expected)


def test_padding_value_without_padded_pixels_gives_no_mask():
    image = read_image(data_path("CT_small.dcm"))
    assert image.padding_mask_hw is None
    assert image.header.fields["Pixel padding value"] == "-2000"


# ------------------------------------------------------------------------------------------
# Colour and multi-frame DICOM
# ------------------------------------------------------------------------------------------


def test_colour_dicom_converted_to_grayscale_with_warning():
    path = data_path("SC_rgb_jpeg_dcmtk.dcm")
    rgb_hwc = pixel_array(path).astype(np.float64)  # pydicom converts YBR to RGB
    image = read_image(path)
    assert any("colour image (YBR_FULL) converted to grayscale" in w for w in image.warnings)
    luma = rgb_hwc @ np.array([0.299, 0.587, 0.114])
    assert_nearly_equal_uint8(image.render_hw, to_8bit(luma / 255.0), min_exact=0.99)
    palette = read_image(data_path("examples_palette.dcm"))
    assert any("PALETTE COLOR" in w for w in palette.warnings)
    assert palette.render_hw.std() > 10


def test_multiframe_frames_and_range():
    path = data_path("emri_small.dcm")  # 10 frames, uncompressed
    frames_fhw = pixel_array(path)
    first = read_image(path)
    assert first.n_frames == 10 and first.frame == 0
    np.testing.assert_array_equal(first.display_hw, frames_fhw[0])
    third = read_image(path, frame=3)
    np.testing.assert_array_equal(third.display_hw, frames_fhw[3])
    assert image_content_hash(third) != image_content_hash(first)
    rle = read_image(data_path("emri_small_RLE.dcm"), frame=3)
    np.testing.assert_array_equal(rle.display_hw, third.display_hw)
    for bad in (10, 99, -1):
        with pytest.raises(MedsaeError, match=r"frame .* out of range: the image has 10 frame"):
            read_image(path, frame=bad)


# ------------------------------------------------------------------------------------------
# Header summary and PHI
# ------------------------------------------------------------------------------------------


def test_header_separates_phi_from_technical_fields(rg1):
    header = read_header(data_path("RG1_UNCR.dcm"))
    assert isinstance(header, HeaderSummary)
    assert header == rg1.header
    fields_text = json.dumps(header.fields)
    for secret in RG1_PHI:
        assert secret not in fields_text
    phi_text = json.dumps(header.phi)
    for secret in RG1_PHI:
        assert secret in phi_text
    assert header.phi["PatientName"] == "CompressedSamples^RG1"
    assert header.phi["StudyInstanceUID"].startswith("1.3.6.1.4.1.5962")
    assert "StudyDate" in header.phi and "ContentTime" in header.phi
    assert header.fields["Modality"] == "CR"
    assert header.fields["SOP class"] == "Computed Radiography Image Storage"
    assert header.fields["Transfer syntax"] == "Explicit VR Little Endian (1.2.840.10008.1.2.1)"
    assert header.fields["Photometric interpretation"] == "MONOCHROME1"
    assert header.fields["Window center"] == "15000"
    assert header.fields["View position"] == "PA"
    assert header.burned_in_annotation is False


def test_private_tags_and_overlays_are_phi():
    header = read_header(data_path("CT_small.dcm"))
    private = [k for k in header.phi if k.endswith(" private")]
    assert len(private) > 100
    assert not any("private" in k for k in header.fields)
    overlay = read_header(data_path("examples_overlay.dcm"))
    assert overlay.phi["Overlay Data (6000,3000)"] == "<18150 bytes>"
    assert not any("Overlay" in k for k in overlay.fields)


def test_burned_in_annotation_warns(tmp_path):
    path = save_modified(data_path("MR_small.dcm"), tmp_path / "burned.dcm",
                         BurnedInAnnotation="YES")
    header = read_header(path)
    assert header.burned_in_annotation is True
    assert any("identifying text" in w for w in header.warnings)
    assert any("identifying text" in w for w in read_image(path).warnings)


def test_read_header_of_non_image_dicom_warns():
    header = read_header(pydicom.examples.get_path("rt_plan"))
    assert header.fields["SOP class"] == "RT Plan Storage"
    assert any("not an image" in w for w in header.warnings)


# ------------------------------------------------------------------------------------------
# PNG / JPEG
# ------------------------------------------------------------------------------------------


@pytest.fixture
def gradient_hw() -> np.ndarray:
    rows, cols = np.mgrid[0:64, 0:80]
    return ((rows * 3 + cols * 2) % 256).astype(np.uint8)


def test_png_8bit_gray_used_as_is(tmp_path, gradient_hw):
    path = tmp_path / "gray.png"
    Image.fromarray(gradient_hw).save(path)
    image = read_image(path)
    assert image.kind == "png"
    np.testing.assert_array_equal(image.render_hw, gradient_hw)
    np.testing.assert_array_equal(image.display_hw, gradient_hw.astype(np.float32))
    assert image.warnings == () and image.invert is False and image.padding_mask_hw is None
    assert image.header.fields["Bit depth"] == "8" and image.header.fields["Mode"] == "L"


def test_png_8bit_narrow_range_not_stretched(tmp_path):
    dim_hw = np.full((20, 30), 100, np.uint8)
    dim_hw[5:10] = 110
    Image.fromarray(dim_hw).save(tmp_path / "dim.png")
    np.testing.assert_array_equal(read_image(tmp_path / "dim.png").render_hw, dim_hw)


def test_png_16bit_scaled_min_max(tmp_path, rng):
    values_hw = rng.integers(1000, 40000, size=(50, 70)).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values_hw).save(path)
    image = read_image(path)
    lo, hi = float(values_hw.min()), float(values_hw.max())
    expected = to_8bit((values_hw - lo) / (hi - lo))
    assert_nearly_equal_uint8(image.render_hw, expected)
    assert image.render_hw.min() == 0 and image.render_hw.max() == 255
    assert image.header.fields["Bit depth"] == "16"


def test_rgb_png_and_jpeg_converted_with_warning(tmp_path, rng):
    rgb_hwc = rng.integers(0, 256, size=(40, 60, 3)).astype(np.uint8)
    Image.fromarray(rgb_hwc).save(tmp_path / "rgb.png")
    image = read_image(tmp_path / "rgb.png")
    assert any("colour image (RGB) converted to grayscale" in w for w in image.warnings)
    pil_l = np.asarray(Image.fromarray(rgb_hwc).convert("L"))
    assert np.abs(image.render_hw.astype(int) - pil_l).max() <= 1

    rgba = np.dstack([rgb_hwc, np.full((40, 60), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert any("colour image (RGBA)" in w for w in image.warnings)
    assert any("alpha channel ignored" in w for w in image.warnings)

    Image.fromarray(rgb_hwc).convert("P").save(tmp_path / "palette.png")
    assert any("colour image (P)" in w for w in read_image(tmp_path / "palette.png").warnings)

    Image.fromarray(rgb_hwc).save(tmp_path / "rgb.jpg", quality=95)
    image = read_image(tmp_path / "rgb.jpg")
    assert image.kind == "jpeg"
    assert any("converted to grayscale" in w for w in image.warnings)
    decoded = np.asarray(Image.open(tmp_path / "rgb.jpg").convert("L"))
    assert np.abs(image.render_hw.astype(int) - decoded).max() <= 1


def test_grey_stored_as_rgb_keeps_values(tmp_path, gradient_hw):
    Image.fromarray(np.dstack([gradient_hw] * 3)).save(tmp_path / "grey_rgb.png")
    image = read_image(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(image.render_hw, gradient_hw)
    assert any("equal channels" in w for w in image.warnings)


def test_gray_jpeg_used_as_is(tmp_path, gradient_hw):
    Image.fromarray(gradient_hw).save(tmp_path / "gray.jpeg", quality=90)
    image = read_image(tmp_path / "gray.jpeg")
    np.testing.assert_array_equal(image.render_hw, np.asarray(Image.open(tmp_path / "gray.jpeg")))
    assert image.warnings == ()


def test_png_of_the_dicom_render_round_trips(tmp_path, rg1):
    save_png(rg1.render_hw, tmp_path / "rg1.png")
    image = read_image(tmp_path / "rg1.png")
    np.testing.assert_array_equal(image.render_hw, rg1.render_hw)


def test_png_text_chunks_are_phi(tmp_path, gradient_hw):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", "Jane Doe, St Elsewhere")
    Image.fromarray(gradient_hw).save(tmp_path / "text.png", pnginfo=info)
    header = read_header(tmp_path / "text.png")
    assert "Jane Doe" in json.dumps(header.phi)
    assert "Jane Doe" not in json.dumps(header.fields)


def test_png_frame_other_than_zero_is_an_error(tmp_path, gradient_hw):
    Image.fromarray(gradient_hw).save(tmp_path / "g.png")
    with pytest.raises(MedsaeError, match="frame 1 is out of range"):
        read_image(tmp_path / "g.png", frame=1)


# ------------------------------------------------------------------------------------------
# Bad inputs: every one is a one-line MedsaeError naming the file
# ------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(tmp: Path, name: str, n_bytes: int | None = None) -> Path:
    data = Path(data_path(name)).read_bytes()
    return _write(tmp / f"cut_{name}", data[: n_bytes or len(data) // 2])


def _unsupported_syntax(tmp: Path) -> Path:
    ds = dcmread(data_path("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    ds.save_as(tmp / "mpeg2.dcm")
    return tmp / "mpeg2.dcm"


def _absurd(tmp: Path, **changes) -> Path:
    return save_modified(data_path("MR_small.dcm"), tmp / "absurd.dcm", **changes)


BAD_INPUTS = {
    "zero-byte": (lambda t: _write(t / "empty.dcm", b""), "file is empty"),
    "random bytes": (
        lambda t: _write(t / "noise.dcm", np.random.default_rng(1).bytes(4096)),
        "not a DICOM, PNG or JPEG image",
    ),
    "random bytes after a DICOM-like start": (
        lambda t: _write(t / "raw.dcm", b"\x08\x00\x05\x00" + np.random.default_rng(2).bytes(4000)),
        ".",
    ),
    "truncated uncompressed": (
        lambda t: _truncated(t, "RG1_UNCR.dcm"), "pixel data are truncated"),
    "truncated jpeg2000": (lambda t: _truncated(t, "RG1_J2KR.dcm"), "truncated"),
    "truncated header": (lambda t: _truncated(t, "RG1_UNCR.dcm", 600), "truncated"),
    "png truncated": (
        lambda t: _write(t / "cut.png", _png_bytes()[: len(_png_bytes()) // 2]),
        "truncated",
    ),
    "rt plan": (
        lambda t: Path(pydicom.examples.get_path("rt_plan")),
        "contains no image: RT Plan Storage has no pixel data",
    ),
    "structured report": (
        lambda t: Path(data_path("test-SR.dcm")),
        "contains no image: Comprehensive SR Storage has no pixel data",
    ),
    "unsupported transfer syntax": (
        _unsupported_syntax,
        r"unsupported transfer syntax MPEG2 Main Profile / Main Level "
        r"\(1.2.840.10008.1.2.4.100\)",
    ),
    "absurd rows and columns": (
        lambda t: _absurd(t, Rows=65535, Columns=65535), "image too large"),
    "absurd frame count": (
        lambda t: _absurd(t, NumberOfFrames=1_000_000), "image too large"),
    "zero rows": (lambda t: _absurd(t, Rows=0), "invalid image dimensions"),
    "text file": (
        lambda t: _write(t / "notes.txt", b"chest x-ray notes\nnothing to see\n"),
        "is a text file",
    ),
    "csv file": (
        lambda t: _write(t / "labels.csv", b"Path,Cardiomegaly\na.png,1\n"), "is a text file"),
    "pdf file": (
        lambda t: _write(t / "report.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
        "is a PDF document",
    ),
    "csv named dcm": (
        lambda t: _write(t / "oops.dcm", b"a,b,c\n1,2,3\n"), "is a text file"),
    "directory": (lambda t: t, "is a directory"),
    "missing file": (lambda t: t / "nope.dcm", "no such file"),
}


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64)).astype(np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_error_naming_file(tmp_path, case):
    make, pattern = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(MedsaeError, match=pattern) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and "Traceback" not in message


def test_absurd_dimensions_refused_before_decoding(tmp_path, monkeypatch):
    path = _absurd(tmp_path, Rows=65535, Columns=65535)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoder called for an absurd header")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", must_not_decode)
    with pytest.raises(MedsaeError, match=r"65535 x 65535 pixels .* the limit is"):
        read_image(path)


def test_twelve_bit_jpeg_extended_reported_unsupported():
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    if "pylibjpeg" in get_decoder(JPEGExtended12Bit).available_plugins:
        pytest.skip("pylibjpeg-libjpeg (GPL) is installed here, so 12-bit JPEG decodes")
    path = data_path("JPGExtended.dcm")
    with pytest.raises(MedsaeError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unsupported: 12-bit JPEG Extended (Process 2 and 4) "
                              "(1.2.840.10008.1.2.4.51)")
    assert "pylibjpeg-libjpeg" in message


def test_missing_decoder_plugin_named(monkeypatch):
    class NoPlugins:
        is_available = False
        available_plugins = ()
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0",
                                "gdcm - requires gdcm>=3.0.10"]

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: NoPlugins())
    path = data_path("RG1_J2KR.dcm")
    with pytest.raises(MedsaeError) as info:
        read_image(path)
    message = str(info.value)
    assert "JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90)" in message
    assert "no decoding plugin installed" in message and "pylibjpeg-openjpeg" in message


def test_permission_denied(tmp_path, monkeypatch):
    # Tests run as root, for whom chmod 000 changes nothing, so the OS refusal is simulated at
    # open(); the end-to-end tests also check a real refusal by running the CLI as 'nobody'.
    path = tmp_path / "locked.dcm"
    path.write_bytes(Path(data_path("MR_small.dcm")).read_bytes())
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(MedsaeError, match="permission denied") as info:
        read_image(path)
    assert str(info.value).startswith(str(path))
    with pytest.raises(MedsaeError, match="permission denied"):
        read_header(path)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    with pytest.raises(MedsaeError, match="not a regular file"):
        read_image(fifo)


def test_non_integer_frame_is_an_error():
    with pytest.raises(MedsaeError, match="frame must be an integer"):
        read_image(data_path("MR_small.dcm"), frame=1.5)


def test_pydicom_warnings_and_logs_do_not_leak(tmp_path, caplog):
    import logging

    path = _truncated(tmp_path, "RG1_J2KR.dcm")
    level_before = logging.getLogger("pydicom").level
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        with pytest.raises(MedsaeError):
            read_image(path)
        with pytest.raises(MedsaeError):
            read_image(data_path("JPGExtended.dcm"))
    assert caught == []
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    assert logging.getLogger("pydicom").level == level_before


def test_dicom_without_preamble_is_read(tmp_path):
    ds = dcmread(data_path("MR_small.dcm"))
    raw_path = tmp_path / "raw_mr.dcm"
    ds.preamble = None
    ds.save_as(raw_path, enforce_file_format=False)
    assert raw_path.read_bytes()[128:132] != b"DICM"
    image = read_image(raw_path)
    np.testing.assert_array_equal(image.display_hw, ds.pixel_array.astype(np.float32))


# ------------------------------------------------------------------------------------------
# save_png and folder-scan helpers
# ------------------------------------------------------------------------------------------


def test_save_png_round_trip(tmp_path, gradient_hw):
    save_png(gradient_hw, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "L" and im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), gradient_hw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_png_file_mode_follows_umask(tmp_path, gradient_hw):
    old_umask = os.umask(0o027)
    try:
        save_png(gradient_hw, tmp_path / "m.png")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "m.png").stat().st_mode & 0o777 == 0o640


def test_save_png_is_atomic(tmp_path, gradient_hw, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(MedsaeError, match="No space left on device") as info:
        save_png(gradient_hw, target)
    assert str(info.value).startswith(str(target))
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_png_errors(tmp_path, gradient_hw):
    with pytest.raises(MedsaeError, match="output folder does not exist"):
        save_png(gradient_hw, tmp_path / "missing" / "out.png")
    with pytest.raises(ValueError):
        save_png(gradient_hw.astype(np.uint16), tmp_path / "x.png")
    with pytest.raises(ValueError):
        save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "x.png")


def test_is_probably_image(tmp_path):
    assert IMAGE_EXTENSIONS == {".dcm", ".dicom", ".png", ".jpg", ".jpeg"}
    for name in ("a.dcm", "b.DICOM", "c.png", "d.JPG", "e.jpeg"):
        (tmp_path / name).write_bytes(b"x")
        assert is_probably_image(tmp_path / name), name
    for name in ("IM0001", "1.2.840.113619.2.55"):
        dicm = tmp_path / name
        dicm.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
        assert is_probably_image(dicm), name
    (tmp_path / "1.2.840.99").write_bytes(b"\0" * 140)
    assert not is_probably_image(tmp_path / "1.2.840.99")
    (tmp_path / "backup.bak").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    assert not is_probably_image(tmp_path / "backup.bak")
    for name, data in (("notes", b"hello"), ("._a.dcm", b"x"), (".hidden.png", b"x"),
                       ("labels.csv", b"a,b"), ("DICOMDIR", b"\0" * 128 + b"DICM")):
        (tmp_path / name).write_bytes(data)
        assert not is_probably_image(tmp_path / name), name
    (tmp_path / "folder.dcm").mkdir()
    assert not is_probably_image(tmp_path / "folder.dcm")
    assert not is_probably_image(tmp_path / "absent.dcm")


def test_core_images_imports_no_qt():
    code = (
        "import sys, medsae_desktop.core.images as m;"
        "bad = [k for k in sys.modules if k.startswith(('PySide', 'PyQt', 'pyqtgraph'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------
# Corrupt compressed pixel data: clean errors, nothing on stderr, no crash. Run in a child
# process because a native decoder that aborts would take pytest down with it.
# ------------------------------------------------------------------------------------------

CORRUPT_SCRIPT = r"""
import sys, numpy as np
from pathlib import Path
from pydicom.data import get_testdata_file
from medsae_desktop.core.images import read_image
from medsae_desktop.core.errors import MedsaeError
out = Path(sys.argv[1])
n_errors = 0
for spec in sys.argv[2:]:
    name, first, last = spec.split(":")
    src = Path(get_testdata_file(name)).read_bytes()
    for seed in range(int(first), int(last)):
        rng = np.random.default_rng(seed)
        data = bytearray(src)
        # Six random bytes in the last 4000: that is where the compressed pixel data live.
        for i in rng.integers(max(132, len(src) - 4000), len(src) - 10, 6):
            data[i] = rng.integers(0, 256)
        out.write_bytes(bytes(data))
        try:
            read_image(out)
        except MedsaeError as exc:
            assert "\n" not in str(exc)
            n_errors += 1
print(n_errors)
"""


def run_corruption(tmp_path: Path, *specs: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CORRUPT_SCRIPT, str(tmp_path / "corrupt.dcm"), *specs],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "RUST_BACKTRACE": "1"},
    )


def test_corrupt_compressed_pixel_data_fails_cleanly(tmp_path):
    # Seeds 0-49 of SC_rgb_jpeg_dcmtk include ones on which gdcm aborts the process (why JPEG
    # Baseline goes to Pillow only); MR_small_RLE ones on which pylibjpeg-rle panics.
    result = run_corruption(tmp_path, "SC_rgb_jpeg_dcmtk.dcm:0:50", "MR_small_RLE.dcm:0:40",
                            "MR_small_jp2klossless.dcm:0:40", "693_J2KI.dcm:0:10")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert int(result.stdout) > 20  # most corruptions are detected, not silently decoded


def test_corrupt_jpeg_lossless_does_not_crash(tmp_path):
    # gdcm aborts (seed 49) or segfaults (seed 168) on these; it now runs in a worker process.
    result = run_corruption(tmp_path, "SC_rgb_jpeg_gdcm.dcm:45:55", "SC_rgb_jpeg_gdcm.dcm:165:170")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert int(result.stdout) >= 10


# ------------------------------------------------------------------------------------------
# gdcm (the only installed JPEG Lossless / JPEG-LS decoder) runs only in a worker process
# (core/safe_decode.py): a native crash or hang there is one clean error here
# ------------------------------------------------------------------------------------------

JPEG_LOSSLESS_SV1 = ("JPEG Lossless, Non-Hierarchical, First-Order Prediction "
                     "(Process 14 [Selection Value 1])")


def _corrupt_file_bytes(tmp: Path, name: str, seed: int) -> Path:
    """CORRUPT_SCRIPT's corruption: six random bytes in the last 4000 of the file."""
    src = Path(data_path(name)).read_bytes()
    rng = np.random.default_rng(seed)
    data = bytearray(src)
    for i in rng.integers(max(132, len(src) - 4000), len(src) - 10, 6):
        data[i] = rng.integers(0, 256)
    return _write(tmp / f"corrupt_{seed}_{name}", bytes(data))


def _corrupt_frame(tmp: Path, name: str, seed: int, *, header_only: bool = False) -> Path:
    """Overwrite a few random bytes of the first compressed frame (only its first 40 bytes,
    the JPEG headers, when ``header_only``) and save it as a 1-frame file."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = dcmread(data_path(name))
    n_frames = int(ds.get("NumberOfFrames", 1))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=n_frames)))
    rng = np.random.default_rng(seed)
    end = min(40, len(frame)) if header_only else len(frame)
    count = rng.integers(1, 3) if header_only else rng.integers(1, 7)
    for i in rng.integers(2, end, count):
        frame[i] = rng.integers(0, 256)
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].is_undefined_length = True
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1
    ds.save_as(tmp / f"corrupt_{seed}_{name}")
    return tmp / f"corrupt_{seed}_{name}"


# Each of these kills a process that decodes it with gdcm (python-gdcm 3.2.6).
GDCM_KILLERS = {
    "jpeg lossless rgb, SIGABRT": (
        lambda t: _corrupt_file_bytes(t, "SC_rgb_jpeg_gdcm.dcm", 49), JPEG_LOSSLESS_SV1),
    "jpeg lossless rgb, SIGSEGV": (
        lambda t: _corrupt_file_bytes(t, "SC_rgb_jpeg_gdcm.dcm", 168), JPEG_LOSSLESS_SV1),
    "jpeg lossless 16-bit signed": (
        lambda t: _corrupt_frame(t, "JPEG-LL.dcm", 22, header_only=True), JPEG_LOSSLESS_SV1),
    "jpeg-ls lossless": (
        lambda t: _corrupt_frame(t, "MR_small_jpeg_ls_lossless.dcm", 80),
        "JPEG-LS Lossless Image Compression"),
    "jpeg-ls near-lossless rgb": (
        lambda t: _corrupt_frame(t, "SC_rgb_jls_lossy_line.dcm", 188),
        "JPEG-LS Lossy (Near-Lossless) Image Compression"),
}


@pytest.mark.parametrize("case", list(GDCM_KILLERS))
def test_gdcm_crash_is_one_clean_error_in_process(tmp_path, case):
    make, syntax = GDCM_KILLERS[case]
    path = make(tmp_path)
    with pytest.raises(MedsaeError) as info:
        read_image(path)  # in this very process: before the worker, this killed pytest
    message = str(info.value)
    assert message.startswith(f"{path}: decoder crashed on corrupt {syntax} data "
                              "(gdcm worker process killed by signal SIG")
    assert "\n" not in message
    # This process is alive and the next file decodes (a new worker is started).
    assert read_image(data_path("SC_rgb_jpeg_gdcm.dcm")).render_hw.shape == (100, 100)


def test_gdcm_killers_really_kill_an_in_process_decode(tmp_path):
    # Guards the cases above: if a gdcm release fixes these, they stop testing the crash path.
    paths = [str(make(tmp_path)) for make, _ in GDCM_KILLERS.values()]
    code = ("import sys; from pydicom import dcmread; from pydicom.pixels import pixel_array;"
            "pixel_array(dcmread(sys.argv[1]), decoding_plugin='gdcm')")
    for path in paths:
        result = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                                timeout=120)
        assert result.returncode < 0, (path, result.returncode)


# Every JPEG Lossless and JPEG-LS image in pydicom's test data, with a frame to read.
GDCM_ONLY_FILES = [
    ("JPEG-LL.dcm", 0), ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0), ("SC_rgb_jpeg_gdcm.dcm", 0),
    ("bad_sequence.dcm", 0), ("MR_small_jpeg_ls_lossless.dcm", 0),
    ("emri_small_jpeg_ls_lossless.dcm", 7), ("SC_rgb_jls_lossy_line.dcm", 0),
    ("SC_rgb_jls_lossy_sample.dcm", 0), ("JPEGLSNearLossless_08.dcm", 0),
    ("JPEGLSNearLossless_16.dcm", 0),
]


@pytest.mark.parametrize("name, frame", GDCM_ONLY_FILES)
def test_isolated_decode_gives_the_in_process_pixels(name, frame):
    from medsae_desktop.core import images

    path = data_path(name)
    ds = dcmread(path)
    # In-process gdcm is safe on these known-good files: it is the reference.
    expected = pixel_array(ds, index=frame, decoding_plugin="gdcm")
    stored = images._decode_frame(ds, ds.file_meta.TransferSyntaxUID, frame)
    assert stored.dtype == expected.dtype and stored.shape == expected.shape
    np.testing.assert_array_equal(stored, expected)
    assert stored.flags.writeable
    image = read_image(path, frame=frame)
    assert image.render_hw.shape == expected.shape[:2]


@pytest.fixture(scope="module")
def rg1_jpeg_lossless(tmp_path_factory) -> Path:
    """RG1 (3.6 MP, 15-bit) transcoded to JPEG Lossless SV1 by gdcm's encoder."""
    import gdcm

    out = tmp_path_factory.mktemp("jll") / "RG1_JLL.dcm"
    reader = gdcm.ImageReader()
    reader.SetFileName(data_path("RG1_UNCR.dcm"))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(out))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    assert dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID == \
        "1.2.840.10008.1.2.4.70"
    return out


def test_rg1_jpeg_lossless_decodes_to_the_same_pixels(rg1, rg1_jpeg_lossless):
    image = read_image(rg1_jpeg_lossless)
    assert image_content_hash(image) == image_content_hash(rg1)
    np.testing.assert_array_equal(image.render_hw, rg1.render_hw)


def test_gdcm_never_runs_in_this_process(monkeypatch):
    import gdcm

    def not_here(*args, **kwargs):
        raise AssertionError("gdcm used in the reading process")

    # pydicom's gdcm plugin builds gdcm.Fragment / gdcm.Image: make any in-process use fail.
    monkeypatch.setattr(gdcm, "Fragment", not_here)
    monkeypatch.setattr(gdcm, "Image", not_here)
    for name in ("JPEG-LL.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                 "RG1_J2KR.dcm", "MR_small_RLE.dcm", "SC_jpeg_no_color_transform.dcm"):
        read_image(data_path(name))


def test_no_pillow_does_not_bring_gdcm_in_process(monkeypatch):
    # JPEG Baseline goes to Pillow only; without Pillow, pydicom would fall back to gdcm.
    import gdcm
    from pydicom.pixels import get_decoder

    class GdcmOnly:
        is_available = True
        available_plugins = ("gdcm",)
        missing_dependencies = []

    monkeypatch.setattr(gdcm, "Image", lambda *a, **k: pytest.fail("gdcm in-process"))
    real_get_decoder = get_decoder
    monkeypatch.setattr(
        pydicom.pixels, "get_decoder",
        lambda uid: GdcmOnly() if uid == "1.2.840.10008.1.2.4.50" else real_get_decoder(uid),
    )
    image = read_image(data_path("SC_rgb_jpeg_dcmtk.dcm"))  # decoded by the worker's gdcm
    assert image.render_hw.shape == (100, 100)


def test_decoder_hang_is_a_clean_timeout_error(monkeypatch):
    from medsae_desktop.core import safe_decode

    path = data_path("JPGLosslessP14SV1_1s_1f_8b.dcm")  # ~15 ms to decode: cannot beat 1 ms
    read_image(path)  # a worker is running, so only the decode is timed
    monkeypatch.setattr(safe_decode, "DECODE_TIMEOUT_S", 0.001)
    with pytest.raises(MedsaeError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: decoder hung on {JPEG_LOSSLESS_SV1} data (corrupt?): "
                              "no result within 0.001 s; the gdcm worker process was stopped")
    monkeypatch.undo()
    assert read_image(path).render_hw.shape == (768, 1024)


def test_worker_that_cannot_start_fails_closed(monkeypatch):
    from medsae_desktop.core import safe_decode

    safe_decode.shutdown()  # no idle worker left: the next decode must start one
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    path = data_path("JPEG-LL.dcm")
    with pytest.raises(MedsaeError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot decode {JPEG_LOSSLESS_SV1}: its decoder (gdcm) "
                              "runs only in a separate process, and cannot start the decoder")
    monkeypatch.undo()
    assert read_image(path).render_hw.shape == (1024, 256)


def test_worker_killed_while_idle_does_not_fail_the_next_file():
    from medsae_desktop.core import safe_decode

    path = data_path("JPEG-LL.dcm")
    read_image(path)
    idle = list(safe_decode._POOL._idle)
    assert idle
    for worker in idle:  # say, by the out-of-memory killer
        worker.proc.kill()
        worker.proc.wait(10)
    assert read_image(path).render_hw.shape == (1024, 256)


def test_concurrent_reads_blame_only_the_corrupt_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    killer = str(_corrupt_file_bytes(tmp_path, "SC_rgb_jpeg_gdcm.dcm", 49))
    good = [data_path("JPEG-LL.dcm"), data_path("SC_rgb_jpeg_gdcm.dcm"),
            data_path("MR_small_jpeg_ls_lossless.dcm")]
    expected = {p: read_image(p).render_hw for p in good}

    def outcome(path):
        try:
            return read_image(path).render_hw
        except MedsaeError as exc:
            return str(exc)

    paths = [good[0], killer, good[1], good[2], killer, good[0]] * 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(outcome, paths))
    for path, result in zip(paths, results):
        if path == killer:
            assert isinstance(result, str) and "decoder crashed on corrupt" in result
        else:
            assert isinstance(result, np.ndarray), result
            np.testing.assert_array_equal(result, expected[path])


def test_cli_render_of_gdcm_killer_exits_1_with_one_line(tmp_path):
    medsae = Path(sys.executable).parent / "medsae"
    assert medsae.exists(), f"{medsae} missing: install the package (pip install -e .)"
    path = _corrupt_file_bytes(tmp_path, "SC_rgb_jpeg_gdcm.dcm", 49)
    out = tmp_path / "out.png"
    result = subprocess.run([str(medsae), "render", str(path), "-o", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"medsae render: error: {path}: decoder crashed on corrupt "
                             f"{JPEG_LOSSLESS_SV1} data (gdcm worker process killed by signal "
                             "SIGABRT)\n")
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# Thread safety of the warning/log silencing (the embed pipeline reads on a thread pool)
# ------------------------------------------------------------------------------------------


def test_concurrent_reads_restore_global_state(tmp_path):
    import logging
    from concurrent.futures import ThreadPoolExecutor

    bad = _truncated(tmp_path, "RG1_J2KR.dcm")
    paths = [data_path("MR_small.dcm"), str(bad), data_path("JPGExtended.dcm"),
             data_path("CT_small.dcm"), data_path("MR_small_RLE.dcm")] * 4
    showwarning_before = warnings.showwarning
    level_before = logging.getLogger("pydicom").level

    def outcome(path):
        try:
            return read_image(path).render_hw.shape
        except MedsaeError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(outcome, paths))
    assert results[0] == (64, 64) and "truncated" in results[1] and "12-bit" in results[2]
    assert results == results[:5] * 4  # same answer whatever the interleaving
    assert warnings.showwarning is showwarning_before
    assert logging.getLogger("pydicom").level == level_before


def test_silencing_drops_warnings_of_reading_threads_only():
    import threading

    from medsae_desktop.core import images

    reading = threading.Event()
    release = threading.Event()

    def reader():
        with images._quiet_reading():
            warnings.warn("from the reading thread", UserWarning)
            reading.set()
            release.wait(10)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread = threading.Thread(target=reader)
        thread.start()
        assert reading.wait(10)
        warnings.warn("from another thread", UserWarning)  # while the reader is inside
        release.set()
        thread.join(10)
    assert [str(w.message) for w in caught] == ["from another thread"]
