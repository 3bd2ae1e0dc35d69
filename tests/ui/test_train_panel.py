"""Trainer tab flow: train a tiny SAE → curves update → cancel → resume → evaluate → load."""

import json
import os


def setup_panel(qtbot, win, cache_path, out_dir, steps):
    tp = win.trainer_tab
    win.tabs.setCurrentWidget(tp)
    tp.set_cache_path(cache_path)
    qtbot.waitUntil(lambda: "images" in tp.cache_info.text(), timeout=20000)
    tp.out_edit.setText(str(out_dir))
    tp.arch.setCurrentText("relu")
    tp.expansion.setValue(1)
    tp.batch.setValue(16)
    tp.steps = steps
    return tp


def test_train_cancel_resume_evaluate_load(qtbot, loaded_window, tiny_workspace, tmp_path):
    win = loaded_window
    out = tmp_path / "new-sae"
    tp = setup_panel(qtbot, win, tiny_workspace.cache_path, out, steps=4000)
    assert "40 images" in tp.cache_info.text() and "with per-location" in tp.cache_info.text()
    tp.start()
    assert tp.b_cancel.isEnabled() and not tp.b_start.isEnabled()
    qtbot.waitUntil(lambda: len(tp.points["loss"]) >= 3, timeout=120000)
    assert len(tp.points["fvu"]) >= 3 and len(tp.points["l0"]) >= 3
    assert len(tp.points["dead"]) >= 3
    qtbot.waitUntil(lambda: tp.curves["loss"].getData()[0] is not None
                    and len(tp.curves["loss"].getData()[0]) >= 3, timeout=10000)
    x, y = tp.curves["loss"].getData()
    assert len(x) >= 3 and all(b > a for a, b in zip(x, x[1:], strict=False))
    assert "samples/s" in tp.rate.text() and tp.rate.text() != "samples/s —"
    steps_before = tp.points["loss"][-1][0]
    with qtbot.waitSignal(tp.training_ended, timeout=60000) as blocker:
        tp.cancel()
    assert blocker.args == ["cancelled"]
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["complete"] is False  # checkpoint of the interrupted run
    assert any((out / "resume").iterdir())
    with qtbot.waitSignal(tp.training_ended, timeout=600000) as blocker:
        tp.start(resume=True)
    assert blocker.args == ["finished"]
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["complete"] is True and cfg["train"]["steps_done"] == 4000
    # resumed curve continues after the cancelled step (no restart from 0)
    xs = [p[0] for p in tp.points["loss"]]
    assert max(xs) > steps_before and min(x for x in xs if x > steps_before) > steps_before
    # evaluate → report; load in viewer in one click each
    with qtbot.waitSignal(tp.evaluated, timeout=300000) as blocker:
        tp.b_eval.click()
    assert os.path.isfile(os.path.join(blocker.args[0], "summary.json"))
    with qtbot.waitSignal(win.models_loaded, timeout=120000):
        tp.b_load.click()
    assert win.state.sae.sae_id == cfg["sae_sha256"]
    assert win.state.report is not None and win.state.population is not None


def test_training_error_is_reported(qtbot, loaded_window, tmp_path):
    tp = loaded_window.trainer_tab
    bad = tmp_path / "not-a-cache.h5"
    bad.write_bytes(b"garbage")
    tp.cache_edit.setText(str(bad))
    tp.out_edit.setText(str(tmp_path / "x"))
    with qtbot.waitSignal(loaded_window.error_shown, timeout=60000) as blocker:
        tp.start()
    assert "not-a-cache.h5" in blocker.args[0]
    qtbot.waitUntil(lambda: tp.b_start.isEnabled(), timeout=10000)


def test_build_cache_from_folder(qtbot, loaded_window, tiny_workspace, tmp_path,
                                 monkeypatch):
    from conftest import GridEncoder

    import medsae_desktop.core.encoders as encoders

    monkeypatch.setattr(encoders, "make_encoder", lambda *a, **k: GridEncoder())
    tp = loaded_window.trainer_tab
    cache = tmp_path / "built.h5"
    with qtbot.waitSignal(tp.cache_built, timeout=120000):
        tp.build_cache(tiny_workspace.images_root, str(cache))
    qtbot.waitUntil(lambda: "40 images" in tp.cache_info.text(), timeout=20000)
    assert cache.is_file()


def test_form_defaults_are_the_papers(qtbot, loaded_window):
    from medsae_desktop.core.sae.config import DEFAULT_L1, TrainConfig

    tp = loaded_window.trainer_tab
    tp.reset_defaults()
    v = tp.values()
    d = TrainConfig()
    assert (v["arch"], v["expansion"], v["batch_size"], v["lr"]) == (
        d.arch, d.expansion, d.batch_size, d.lr)
    assert v["l1"] == DEFAULT_L1 and "k" not in v and "epochs" not in v
    tp.arch.setCurrentText("topk")
    v = tp.values()
    assert "l1" not in v and v["k"] >= 1
    TrainConfig.from_dict(v)  # accepted by the core config
