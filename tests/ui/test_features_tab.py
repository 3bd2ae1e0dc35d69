"""Features tab flow: review a unit → name accepted → stored → exported; keyboard review."""

import csv
import json

from PySide6.QtCore import Qt


def features_tab(qtbot, win):
    win.tabs.setCurrentWidget(win.features_tab)
    ft = win.features_tab
    qtbot.waitUntil(lambda: ft.unit is not None, timeout=10000)
    return ft


def test_table_lists_every_unit_with_report_statistics(qtbot, loaded_window):
    ft = features_tab(qtbot, loaded_window)
    sae = loaded_window.state.sae
    assert ft.model.rowCount() == sae.d_sae
    report = loaded_window.state.report
    assert ft.table_data.source == "evaluation report"
    k = ft.unit
    assert ft.table_data.frequency_k[k] == report.frequency_k[k]
    # sorted by frequency, descending
    freqs = [ft.table_data.frequency_k[int(ft.proxy.index(r, 0).data())]
             for r in range(min(10, ft.proxy.rowCount()))]
    assert freqs == sorted(freqs, reverse=True)


def test_search_and_status_filter(qtbot, loaded_window):
    ft = features_tab(qtbot, loaded_window)
    ft.hide_dead.setChecked(False)
    ft.search.setText("#7")
    assert ft.proxy.rowCount() >= 1
    assert int(ft.proxy.index(0, 0).data()) == 7
    ft.search.setText("")
    label = next(lab for lab in ft.table_data.best_label_k if lab)
    ft.search.setText(label.lower())
    n = ft.proxy.rowCount()
    assert 0 < n < ft.model.rowCount()
    ft.search.setText("")
    ft.status_filter.setCurrentText("accepted")
    assert ft.proxy.rowCount() == 0  # nothing reviewed yet


def test_review_accept_store_export(qtbot, loaded_window, tmp_path):
    win = loaded_window
    ft = features_tab(qtbot, win)
    st = win.state
    sid = st.sae.sae_id
    # pick a unit that has a proposed name (from the names CSV of the workspace)
    unit = next(iter(st.names()))
    assert ft.select_unit(unit) or (ft.hide_dead.setChecked(False) or ft.select_unit(unit))
    assert ft.unit == unit
    proposed = st.store.get_name(sid, unit)
    assert proposed.status == "proposed"
    ft.advance.setChecked(True)
    ft.view.setFocus()
    qtbot.keyClick(ft.view, Qt.Key.Key_A)  # accept by keyboard
    stored = st.store.get_name(sid, unit)
    assert stored.status == "accepted" and stored.concept == proposed.concept
    assert [h.action for h in st.store.history(sid, unit)][-1] == "accept"
    assert ft.unit != unit  # advanced to the next unit
    # the viewer's names follow the store
    assert st.display_name(unit) == proposed.concept
    # export CSV and JSON through the window
    out_csv = win.export_names(str(tmp_path / "names.csv"), "csv")
    rows = {int(r["unit"]): r for r in csv.DictReader(out_csv.open())}
    assert rows[unit]["status"] == "accepted"
    out_json = win.export_names(str(tmp_path / "names.json"), "json")
    doc = json.loads(out_json.read_text())
    assert doc["sae_id"] == sid
    assert any(h["unit"] == unit and h["action"] == "accept" for h in doc["history"])


def test_edit_flag_reject_by_keyboard(qtbot, loaded_window):
    win = loaded_window
    ft = features_tab(qtbot, win)
    st = win.state
    sid = st.sae.sae_id
    ft.advance.setChecked(False)
    unit = ft.unit
    # E focuses the editor; typing there must not trigger the single-key shortcuts
    ft.view.setFocus()
    qtbot.keyClick(ft.view, Qt.Key.Key_E)
    assert ft.annot.concept.hasFocus()
    ft.annot.concept.clear()
    qtbot.keyClicks(ft.annot.concept, "rib fracture area")
    qtbot.keyClick(ft.annot.concept, Qt.Key.Key_Return)
    name = st.store.get_name(sid, unit)
    assert (name.concept, name.status) == ("rib fracture area", "edited")
    ft.view.setFocus()
    qtbot.keyClick(ft.view, Qt.Key.Key_G)
    assert st.store.get_name(sid, unit).status == "flagged"
    qtbot.keyClick(ft.view, Qt.Key.Key_R)
    assert st.store.get_name(sid, unit).status == "rejected"
    assert st.display_name(unit) == f"unnamed #{unit}"
    actions = [h.action for h in st.store.history(sid, unit)]
    assert actions[-3:] == ["edit", "flag", "reject"]
    assert ft.annot.history.topLevelItemCount() == len(actions)
    # J / K move through the table
    row = ft.view.currentIndex().row()
    qtbot.keyClick(ft.view, Qt.Key.Key_J)
    assert ft.view.currentIndex().row() == row + 1
    qtbot.keyClick(ft.view, Qt.Key.Key_K)
    assert ft.view.currentIndex().row() == row


def test_propose_with_labels_namer_in_background(qtbot, loaded_window):
    win = loaded_window
    ft = features_tab(qtbot, win)
    st = win.state
    sid = st.sae.sae_id
    # an active unit with a positive label correlation, first given another proposed name
    t = ft.table_data
    unit = next(k for k in range(t.n_units) if t.corr_kc[k].max() > 0 and t.frequency_k[k] > 0)
    st.store.propose(sid, unit, "placeholder", namer="vocab")
    st.notify_names([unit])
    ft.hide_dead.setChecked(False)
    assert ft.select_unit(unit)
    with qtbot.waitSignal(st.names_changed, timeout=10000):
        ft.propose_unit("labels")
    name = st.store.get_name(sid, unit)
    assert name.status == "proposed" and name.namer == "labels"
    assert name.concept == t.label_names[int(t.corr_kc[unit].argmax())]


def test_unconfigured_namer_explains_itself(qtbot, loaded_window):
    ft = features_tab(qtbot, loaded_window)
    with qtbot.waitSignal(ft.failed, timeout=5000) as blocker:
        ft.propose_unit("medgemma")
    assert "not configured" in blocker.args[0]


def test_gallery_and_plots(qtbot, loaded_window):
    ft = features_tab(qtbot, loaded_window)
    pop = loaded_window.state.population
    unit = ft.unit
    qtbot.waitUntil(lambda: ft.gallery.count() > 0, timeout=20000)
    n_active = int((pop.top_rows_sm[unit] >= 0).sum())
    assert ft.gallery.count() == min(12, n_active)
    assert not ft.gallery.item(0).icon().isNull()
    assert ft.corr.rows and ft.corr.rows[0][1] >= ft.corr.rows[-1][1]
    # clicking a thumbnail opens it in the viewer
    path = ft.gallery.item(0).data(Qt.ItemDataRole.UserRole)
    with qtbot.waitSignal(loaded_window.viewer.study_opened, timeout=20000) as blocker:
        ft._on_thumb(ft.gallery.item(0))
    assert blocker.args == [path]
    assert loaded_window.tabs.currentWidget() is loaded_window.viewer


def test_import_names_csv(qtbot, loaded_window, tmp_path):
    win = loaded_window
    st = win.state
    p = tmp_path / "NAMES.csv"
    p.write_text("unit,concept,description,namer,score\n5,aortic knob,,vocab,0.31\n")
    assert win.import_names(str(p)) == 1
    n = st.store.get_name(st.sae.sae_id, 5)
    assert (n.concept, n.status, n.namer) == ("aortic knob", "proposed", "vocab")
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with qtbot.waitSignal(win.error_shown, timeout=2000):
        assert win.import_names(str(bad)) == 0
