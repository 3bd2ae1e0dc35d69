"""Evaluation tab: run an evaluation from the form → report written and shown; raw + compare;
cancel writes nothing; a folder that is not a report gives a message, not a crash."""

import json
import threading

import numpy as np
from PySide6.QtCore import Qt

from medsae_desktop.core.eval import compare_reports, comparison_lines, load_report
from medsae_desktop.ui.widgets.qt_evaluation_tab import summary_lines


def _run(qtbot, tab, out, *, raw=False, compare=""):
    tab.out_edit.setText(str(out))
    tab.raw_check.setChecked(raw)
    tab.compare_edit.setText(str(compare))
    tab.f1_check.setChecked(False)
    handle = tab.run_evaluation()
    assert handle is not None and not tab.b_run.isEnabled() and tab.b_cancel.isEnabled()
    qtbot.waitUntil(lambda: handle.is_done, timeout=120000)
    assert handle.state == "finished", handle.error
    return handle


def test_tab_shows_the_workspace_report_on_load(loaded_window, tiny_workspace):
    tab = loaded_window.evaluation_tab
    assert tab.cache_edit.text() == tiny_workspace.cache_path
    assert tab.sae_edit.text() == tiny_workspace.sae_dir
    assert tab.report is not None
    assert str(tab.report.path) == tiny_workspace.report_dir
    assert tab.units_model.rowCount() == tab.report.n_units == 96


def test_evaluate_from_the_tab_writes_and_shows_the_report(qtbot, loaded_window, tmp_path):
    win = loaded_window
    tab = win.evaluation_tab
    win.tabs.setCurrentWidget(tab)
    out = tmp_path / "rep"
    _run(qtbot, tab, out)
    assert (out / "summary.json").is_file() and (out / "units.csv").is_file()
    rep = load_report(out)
    assert tab.report.path == rep.path
    for line in summary_lines(rep):
        assert line in tab.summary_label.text()
    assert f"{rep.summary['mean_best_corr']:.4f}" in tab.summary_label.text()
    assert tab.units_model.rowCount() == rep.n_units == 96
    assert tab.figures_layout.count() > 1  # figures (PNGs) + stretch
    assert tab.b_html.isEnabled() and tab.b_run.isEnabled()

    # sort by frequency, descending: the view's first row is the most frequent unit
    tab.units_view.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    proxy = tab.units_view.model()
    shown = [float(proxy.index(r, 1).data(Qt.ItemDataRole.UserRole))
             for r in range(proxy.rowCount())]
    assert shown == sorted(rep.frequency_k.tolist(), reverse=True)
    first_unit = int(proxy.index(0, 0).data())
    assert rep.frequency_k[first_unit] == np.max(rep.frequency_k)


def test_raw_evaluation_compared_with_the_sae_report(qtbot, loaded_window, tmp_path):
    tab = loaded_window.evaluation_tab
    sae_rep = tmp_path / "sae-rep"
    _run(qtbot, tab, sae_rep)
    raw_rep = tmp_path / "raw-rep"
    _run(qtbot, tab, raw_rep, raw=True, compare=sae_rep)
    assert tab.report.kind == "raw" and tab.units_model.rowCount() == 512
    expected = comparison_lines(json.loads((raw_rep / "comparison.json").read_text()))
    assert expected and tab.comparison_text.toPlainText() == "\n".join(expected)


def test_compare_the_shown_report_without_rerunning(qtbot, loaded_window, tmp_path):
    tab = loaded_window.evaluation_tab
    sae_rep, raw_rep = tmp_path / "sae-rep", tmp_path / "raw-rep"
    _run(qtbot, tab, raw_rep, raw=True)
    _run(qtbot, tab, sae_rep)
    assert not (sae_rep / "comparison.json").exists() and not tab.comparison_text.toPlainText()
    handle = tab.compare_with(str(raw_rep))
    qtbot.waitUntil(lambda: handle.is_done, timeout=20000)
    expected = comparison_lines(compare_reports(load_report(sae_rep), load_report(raw_rep)))
    assert expected and tab.comparison_text.toPlainText() == "\n".join(expected)


def test_cancel_writes_no_report(qtbot, loaded_window, tmp_path):
    tab = loaded_window.evaluation_tab
    release = threading.Event()
    # Occupy the evaluation lane so the tab's job is still queued when it is cancelled:
    # the cancel then lands deterministically, however fast this machine evaluates.
    blocker = loaded_window.runner.submit(lambda: release.wait(60), name="hold", lane="eval")
    out = tmp_path / "never"
    tab.out_edit.setText(str(out))
    handle = tab.run_evaluation()
    tab.b_cancel.click()
    release.set()
    qtbot.waitUntil(lambda: handle.is_done and blocker.is_done, timeout=60000)
    assert handle.state == "cancelled"
    assert not out.exists()
    assert tab.b_run.isEnabled() and not tab.b_cancel.isEnabled()
    assert tab.progress.format() == "cancelled"


def test_opening_a_folder_that_is_not_a_report_shows_an_error(qtbot, loaded_window, tmp_path):
    tab = loaded_window.evaluation_tab
    before = tab.report
    errors = []
    tab.failed.connect(errors.append)
    (tmp_path / "junk").mkdir()
    handle = tab.open_report(str(tmp_path / "junk"))
    qtbot.waitUntil(lambda: handle.is_done, timeout=20000)
    assert handle.state == "failed"
    assert len(errors) == 1 and "\n" not in errors[0] and "junk" in errors[0]
    assert tab.report is before  # the shown report is kept
