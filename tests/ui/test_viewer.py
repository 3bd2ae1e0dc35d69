"""Viewer flow: open a study → features listed → overlays toggled; window/level, PHI, errors."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from medsae_desktop.core import inspection as ins


def open_and_wait(qtbot, win, path):
    v = win.viewer
    with qtbot.waitSignal(v.overlay_shown, timeout=60000,
                          check_params_cb=lambda units: len(units) > 0):
        win.open_study(str(path))
    return v


def test_open_study_lists_features_and_shows_top_overlay(qtbot, loaded_window, tiny_workspace):
    win = loaded_window
    v = open_and_wait(qtbot, win, tiny_workspace.study_path)
    hits = v.features.hits()
    assert 1 <= len(hits) <= 10
    acts = [h.activation for h in hits]
    assert acts == sorted(acts, reverse=True)
    # percentiles against the cache population, names from the store
    assert all(h.percentile is not None and 0 <= h.percentile <= 100 for h in hits)
    named = win.state.names()
    for h in hits:
        assert h.name == win.state.display_name(h.unit)
    assert any(h.unit in named for h in hits) or not named
    # the strongest feature (plus the strongest named one if it is unnamed) is overlaid
    assert v.shown_units == ins.default_overlay_units(hits)
    assert v.shown_units[0] == hits[0].unit
    assert v.view.has_overlay
    full = ins.expand_overlay(v.merged_rgba, v.image.render_hw.shape)
    assert full.shape[:2] == v.image.render_hw.shape
    assert v.legend.isVisible() and len(v.legend.entries) == len(v.shown_units)
    assert v.open_to_overlay_s is not None and v.open_to_overlay_s > 0


def test_selecting_two_features_changes_the_overlay(qtbot, loaded_window, tiny_workspace):
    v = open_and_wait(qtbot, loaded_window, tiny_workspace.study_path)
    top = v.features.hits()[0].unit
    with qtbot.waitSignal(v.overlay_shown, timeout=30000, check_params_cb=lambda u: u == [top]):
        v.features.select_units([top])
    first = v.merged_rgba.copy()
    units = [h.unit for h in v.features.hits()[:2]]
    assert len(units) == 2
    with qtbot.waitSignal(v.overlay_shown, timeout=30000,
                          check_params_cb=lambda u: u == units):
        v.features.select_units(units)
    assert len(v.layers) == 2 and len(v.legend.entries) == 2
    assert not np.array_equal(first, v.merged_rgba)
    # two features get two distinct solid colours
    c0, c1 = (tuple(lay.lut[255]) for lay in v.layers)
    assert c0 != c1
    # deselect all → no overlay
    with qtbot.waitSignal(v.overlay_shown, timeout=10000, check_params_cb=lambda u: u == []):
        v.features.clearSelection()
    assert not v.view.has_overlay


def test_overlay_survives_window_level_and_zoom(qtbot, loaded_window, tiny_workspace):
    from medsae_desktop.core.images import Window

    v = open_and_wait(qtbot, loaded_window, tiny_workspace.study_path)
    overlay = v.view.overlay_item.image.copy()
    before = v.view.image_item.image.copy()
    v.set_window(Window(100.0, 60.0, "test"))
    qtbot.waitUntil(lambda: not np.array_equal(v.view.image_item.image, before), timeout=3000)
    assert np.array_equal(v.view.overlay_item.image, overlay)  # overlay untouched by W/L
    assert "C 100 W 60" in v.window_label()
    # right-drag window/level changes the window
    w0 = v.effective_window()
    v.view.window_dragged.emit(30.0, -10.0)
    assert v.effective_window().width > w0.width
    # zoom and pan keep the overlay aligned: both items share the view box coordinates
    v.view.zoom_by(2.0)
    assert v.view.overlay_item.mapRectToView(v.view.overlay_item.boundingRect()) == \
        v.view.image_item.mapRectToView(v.view.image_item.boundingRect())
    v.reset_window()
    assert v.window is None


def test_opacity_and_toggle(qtbot, loaded_window, tiny_workspace):
    v = open_and_wait(qtbot, loaded_window, tiny_workspace.study_path)
    v.opacity.setValue(25)
    assert v.view.overlay_item.opacity() == pytest.approx(0.25)
    qtbot.keyClick(loaded_window, Qt.Key.Key_O)
    assert not v.view.overlay_item.isVisible()
    v.toggle_overlays()
    assert v.view.overlay_item.isVisible()


def test_viewer_overlay_equals_core_overlay(qtbot, loaded_window, tiny_workspace):
    """What the viewer shows is exactly core.inspection's overlay for the same inputs."""
    from medsae_desktop.core.images import read_image

    win = loaded_window
    v = open_and_wait(qtbot, win, tiny_workspace.study_path)
    st = win.state
    image = read_image(tiny_workspace.study_path)
    res = ins.inspect_image(image, st.encoder, st.sae, population=st.population,
                            names=st.names(), top_n=10)
    assert [h.unit for h in res.top] == [h.unit for h in v.features.hits()]
    np.testing.assert_allclose([h.activation for h in res.top],
                               [h.activation for h in v.features.hits()])
    _, merged = ins.overlay_for(res, image, ins.default_overlay_units(res.top), opacity=1.0)
    np.testing.assert_array_equal(merged, v.merged_rgba)


def test_phi_is_hidden_until_revealed(qtbot, loaded_window):
    from pydicom.data import get_testdata_file

    rg1 = get_testdata_file("RG1_UNCR.dcm")
    v = loaded_window.viewer
    with qtbot.waitSignal(v.study_opened, timeout=30000):
        loaded_window.open_study(rg1)
    phi = dict(v.image.header.phi)
    assert phi, "RG1 has identifying fields"
    shown = " ".join(v.header.shown_values())
    patient = str(phi.get("PatientName", ""))
    assert patient and patient not in shown
    v.header.reveal.setChecked(True)
    assert patient in " ".join(v.header.shown_values())
    # a new study hides them again
    with qtbot.waitSignal(v.study_opened, timeout=30000):
        loaded_window.open_study(rg1)
    assert not v.header.phi_visible
    assert patient not in " ".join(v.header.shown_values())


def test_corrupt_file_shows_a_message_not_a_crash(qtbot, loaded_window, tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM" + b"\x00" * 50 + b"not really dicom" * 10)
    win = loaded_window
    with qtbot.waitSignal(win.error_shown, timeout=30000) as blocker:
        win.open_study(str(bad))
    msg = blocker.args[0]
    assert "broken.dcm" in msg and "\n" not in msg
    assert win.isVisible()
    # the app still works afterwards
    assert win.viewer.image is None or win.viewer.study_path != str(bad)


def test_folder_drop_lists_studies(qtbot, loaded_window, tiny_workspace):
    from pathlib import Path

    folder = Path(tiny_workspace.images_root)
    v = loaded_window.viewer
    with qtbot.waitSignal(v.study_opened, timeout=30000):
        loaded_window.handle_dropped([str(folder)])
    assert v.study_list.count() == len(list(folder.glob("*.png")))
    assert v.study_list.isVisibleTo(loaded_window)


def test_recent_files_are_remembered(qtbot, loaded_window, tiny_workspace):
    v = open_and_wait(qtbot, loaded_window, tiny_workspace.study_path)
    assert loaded_window.recent_files()[0] == str(tiny_workspace.study_path)
    assert loaded_window.recent_menu.actions()[0].toolTip() == str(tiny_workspace.study_path)
    assert v.study_path == str(tiny_workspace.study_path)
