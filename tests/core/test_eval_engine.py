"""The streamed evaluation job, labels handling, reports and their comparison."""

import json
import math

import numpy as np
import pytest

from medsae_desktop.core.cache import write_cache
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.eval import (
    EvalConfig, balanced_subset, compare_reports, comparison_lines, evaluate_job, load_report,
    write_report)
from medsae_desktop.core.eval.data import resolve_labels
from medsae_desktop.core.eval.metrics import (
    correlation_matrix, monosemanticity_scores, precision_recall_f1, unit_entropy)
from medsae_desktop.core.progress import run_job
from medsae_desktop.core.sae import load_sae, save_sae

LABELS = ["Cardiomegaly", "Edema", "Pneumothorax"]


@pytest.fixture
def problem(tmp_path, rng):
    """A 300-image cache with labels (incl. −1 and blanks) and a small ReLU SAE."""
    n, d, k = 300, 16, 40
    y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    dirs = rng.normal(size=(3, d)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32) + 1.5 * (y @ dirs)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lab = y.copy()
    lab[rng.random((n, 3)) < 0.08] = -1.0
    lab[rng.random((n, 3)) < 0.08] = np.nan
    paths = [f"p{i // 50}/img{i}.png" for i in range(n)]
    cache = write_cache(tmp_path / "c.h5", x, paths=paths, labels_nc=lab, label_names=LABELS)
    w = rng.normal(size=(k, d)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    w[:3] = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)  # three "planted" latents
    mu = x.mean(0)
    sae_dir = save_sae(tmp_path / "sae", {
        "W_enc": w.T.copy(), "b_enc": np.full(k, -0.5, np.float32), "W_dec": w,
        "b_dec": np.zeros(d, np.float32), "input_mean": mu}, {
        "arch": "relu", "d_in": d, "d_sae": k, "input_scale": 3.0})
    return {"cache": cache, "sae": sae_dir, "x": x, "lab": lab, "tmp": tmp_path}


def test_job_matches_in_memory_metrics(problem):
    job = evaluate_job(problem["cache"], sae_dir=problem["sae"], config=EvalConfig(chunk_rows=64))
    reports = []
    try:
        while True:
            reports.append(next(job))
    except StopIteration as stop:
        res = stop.value
    assert reports[-1].done == reports[-1].total
    sae = load_sae(problem["sae"])
    acts = sae.encode(problem["x"])
    y, _ = resolve_labels(problem["lab"], "zeros")
    np.testing.assert_allclose(res.corr_kc, correlation_matrix(acts, y), atol=1e-6)
    np.testing.assert_allclose(res.moments.ms_k, monosemanticity_scores(acts, problem["x"]),
                               rtol=1e-4, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(res.entropy_k, unit_entropy(res.corr_kc))
    p, r, f, thr = precision_recall_f1(acts, y)
    np.testing.assert_allclose(res.f1_kc, f)
    # BLAS results depend on the batch shape in the last float32 bit
    np.testing.assert_allclose(res.thresholds_k, thr, rtol=1e-6)
    s = res.summary
    assert s["kind"] == "sae" and s["n_images"] == 300 and s["n_units"] == 40
    # The planted latents are each label's best unit.
    assert [row["best_unit"] for row in s["per_label"]] == [0, 1, 2]
    assert s["mean_best_corr"] == pytest.approx(np.mean(res.best.corr_c))
    rec = s["reconstruction"]
    assert {"mse", "fvu", "l0", "dead_fraction", "dense_fraction", "cosine"} <= set(rec)
    assert rec["l0"] == pytest.approx((acts != 0).sum(1).mean())


def test_multi_pass_equals_single_pass(problem):
    one = run_job(evaluate_job(problem["cache"], sae_dir=problem["sae"]))
    # 1e-4 MB holds fewer than one unit's column: one pass per unit block
    many = run_job(evaluate_job(problem["cache"], sae_dir=problem["sae"],
                                config=EvalConfig(memory_mb=1, chunk_rows=50)))
    np.testing.assert_allclose(one.f1_kc, many.f1_kc)
    np.testing.assert_allclose(one.corr_kc, many.corr_kc, atol=1e-6)


def test_raw_units_and_policies(problem):
    res = run_job(evaluate_job(problem["cache"], config=EvalConfig(uncertain="ignore")))
    assert res.kind == "raw" and res.n_units == 16
    assert res.summary["reconstruction"] is None
    raw = problem["lab"]
    mask = ~(raw == -1)
    y = np.nan_to_num(np.where(raw == -1, np.nan, raw))
    np.testing.assert_allclose(res.corr_kc, correlation_matrix(problem["x"], y, mask), atol=1e-6)
    ones = run_job(evaluate_job(problem["cache"], config=EvalConfig(uncertain="ones", f1=False)))
    y1 = np.nan_to_num(np.where(raw == -1, 1.0, raw))
    np.testing.assert_allclose(ones.corr_kc, correlation_matrix(problem["x"], y1), atol=1e-6)
    assert ones.f1_kc is None


def test_resolve_labels_policies():
    raw = np.array([[1, -1, np.nan, 0]], np.float32)
    z, m = resolve_labels(raw, "zeros")
    assert z.tolist() == [[1, 0, 0, 0]] and m is None
    o, _ = resolve_labels(raw, "ones")
    assert o.tolist() == [[1, 1, 0, 0]]
    i, m = resolve_labels(raw, "ignore")
    assert i.tolist() == [[1, 0, 0, 0]] and m.tolist() == [[True, False, True, True]]
    with pytest.raises(MedsaeError):
        resolve_labels(raw, "maybe")


def test_balanced_subset_official_rule():
    y = np.array([
        [0, 0],   # no positive: skipped
        [1, 0],   # taken: counts (1, 0)
        [1, 1],   # taken: counts (2, 1)
        [1, 0],   # label 0 full (2): skipped
        [0, 1],   # taken: counts (2, 2) -> every label has 2: stop
        [0, 1],
    ], np.float32)
    assert balanced_subset(y, 2).tolist() == [1, 2, 4]
    # a label that never reaches the quota makes the scan run to the end
    assert balanced_subset(y[:, :1], 5).tolist() == [1, 2, 3]


def test_balanced_evaluation_and_csv_labels(problem, tmp_path):
    res = run_job(evaluate_job(problem["cache"], config=EvalConfig(balanced=20, f1=False)))
    assert 20 <= res.summary["n_images"] < 300
    assert all(r["n_positive"] >= 20 for r in res.summary["per_label"])
    # The same labels from a CSV, matched by path, in another order, one image missing.
    import csv

    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Path", "Sex", *LABELS])
        for i in reversed(range(1, 300)):
            w.writerow([f"p{i // 50}/img{i}.png", "F",
                        *["" if np.isnan(v) else f"{v:g}" for v in problem["lab"][i]]])
    via_csv = run_job(evaluate_job(problem["cache"], labels_csv=csv_path,
                                   config=EvalConfig(f1=False)))
    assert via_csv.summary["n_images"] == 299 and via_csv.rows_n[0] == 1
    y, _ = resolve_labels(problem["lab"][1:], "zeros")
    np.testing.assert_allclose(via_csv.corr_kc, correlation_matrix(problem["x"][1:], y),
                               atol=1e-6)
    with pytest.raises(MedsaeError, match="needs labels"):
        nolab = write_cache(tmp_path / "nolab.h5", problem["x"])
        run_job(evaluate_job(nolab, config=EvalConfig(balanced=5)))


def test_no_labels_still_reports_frequency_and_ms(problem, tmp_path):
    cache = write_cache(tmp_path / "nolab.h5", problem["x"])
    res = run_job(evaluate_job(cache, sae_dir=problem["sae"]))
    assert res.corr_kc.shape == (40, 0) and res.f1_kc is None
    assert res.summary["mean_best_corr"] is None and res.summary["n_ms"] > 0
    rep = load_report(write_report(res, tmp_path / "rep_nolab"))
    assert rep.label_names == () and rep.n_units == 40


def test_sae_cache_width_mismatch(problem, tmp_path):
    cache = write_cache(tmp_path / "wide.h5", np.ones((4, 8), np.float32))
    with pytest.raises(MedsaeError, match="16-d inputs"):
        run_job(evaluate_job(cache, sae_dir=problem["sae"]))


def test_report_roundtrip_and_comparison(problem):
    tmp = problem["tmp"]
    sae_res = run_job(evaluate_job(problem["cache"], sae_dir=problem["sae"]))
    raw_res = run_job(evaluate_job(problem["cache"]))
    raw_dir = write_report(raw_res, tmp / "rep_raw")
    sae_dir = write_report(sae_res, tmp / "rep", compare_dir=raw_dir)
    for name in ("summary.json", "units.csv", "correlation.csv", "arrays.npz", "report.html",
                 "heatmap.png", "entropy_hist.png", "frequency_hist.png", "ms_hist.png",
                 "per_label.png", "comparison.json"):
        assert (sae_dir / name).is_file(), name
    header = (sae_dir / "units.csv").read_text().splitlines()[0]
    assert header == ("unit,frequency,mean_activation,max_activation,best_label,best_corr,"
                      "entropy,monosemanticity,alive")
    assert (sae_dir / "correlation.csv").read_text().splitlines()[0] == "unit," + ",".join(LABELS)
    html = (sae_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and "src='http" not in html
    rep = load_report(sae_dir)
    np.testing.assert_allclose(rep.corr_kc, sae_res.corr_kc, atol=1e-6)
    np.testing.assert_array_equal(rep.alive_k, sae_res.alive_k)
    assert rep.arrays["f1_kc"].shape == (40, 3)
    st = rep.unit_stats(0)
    assert st.best_label == "Cardiomegaly" and st.alive
    assert set(st.corr_by_label) == set(LABELS) and st.f1_by_label is not None
    with pytest.raises(IndexError):
        rep.unit_stats(40)
    comp = json.loads((sae_dir / "comparison.json").read_text())
    metrics = {m["metric"]: m for m in comp["metrics"]}
    assert metrics["mean_best_corr"]["winner"] in (comp["a"]["name"], comp["b"]["name"], "tie")
    lines = comparison_lines(compare_reports(rep, load_report(raw_dir)))
    assert any("monosemanticity" in ln for ln in lines)


def test_load_report_rejects_bad_folders(problem, tmp_path):
    with pytest.raises(MedsaeError, match="not found"):
        load_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsaeError, match="summary.json"):
        load_report(tmp_path / "empty")
    res = run_job(evaluate_job(problem["cache"], config=EvalConfig(f1=False)))
    d = write_report(res, tmp_path / "r", figures=False)
    s = json.loads((d / "summary.json").read_text())
    s["schema_version"] = 99
    (d / "summary.json").write_text(json.dumps(s))
    with pytest.raises(MedsaeError, match="newer"):
        load_report(d)


def test_cancel_closes_cache(problem):
    job = evaluate_job(problem["cache"], sae_dir=problem["sae"], config=EvalConfig(chunk_rows=10))
    next(job)
    next(job)
    job.close()  # the with-block closed the HDF5 file: it can be reopened for writing
    import h5py

    with h5py.File(problem["cache"], "a"):
        pass


def test_summary_has_no_nan(problem):
    res = run_job(evaluate_job(problem["cache"], sae_dir=problem["sae"]))
    d = write_report(res, problem["tmp"] / "r2", figures=False)
    text = (d / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert not math.isnan(json.loads(text)["mean_ms"])
