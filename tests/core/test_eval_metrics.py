"""Metrics of DESIGN.md §5.3: hand-computed values and slow independent references."""

import math

import numpy as np
import pytest

from medsae_desktop.core.eval.metrics import (
    ReconAccumulator, UnitAccumulator, alive_by_correlation, best_unit_per_label,
    binary_counts, correlation_matrix, fires, monosemanticity_scores, precision_recall_f1,
    top_fraction_thresholds, unit_entropy, varying_labels)


# ---- slow references (loops, textbook formulas; no shared code with the module) -------------
def ref_pearson(a, y, mask=None):
    k, c = a.shape[1], y.shape[1]
    out = np.zeros((k, c))
    for i in range(k):
        for j in range(c):
            m = np.ones(len(a), bool) if mask is None else mask[:, j]
            x, t = a[m, i].astype(float), y[m, j].astype(float)
            if len(x) < 2 or x.std() == 0 or t.std() == 0:
                continue
            out[i, j] = np.corrcoef(x, t)[0, 1]
    return out


def ref_entropy(corr):
    out = []
    for row in corr:
        s = sum(abs(v) for v in row)
        h = 0.0
        for v in row:
            p = abs(v) / (s + 1e-8)
            h -= p * math.log(p + 1e-10)
        out.append(h)
    return np.array(out)


def ref_ms(a, e):
    n, k = a.shape
    en = [v / np.linalg.norm(v) for v in e.astype(float)]
    out = []
    for u in range(k):
        col = a[:, u].astype(float)
        lo, hi = col.min(), col.max()
        if hi == lo:
            out.append(np.nan)
            continue
        t = (col - lo) / (hi - lo)
        num = den = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                w = t[i] * t[j]
                num += w * float(en[i] @ en[j])
                den += w
        out.append(num / den if den > 0 else np.nan)
    return np.array(out)


def ref_threshold(col, frac=0.3, eps=1e-7):
    pos = sorted((v for v in col if v > eps), reverse=True)
    if not pos:
        return np.nan
    m = max(1, math.ceil(frac * len(pos) - 1e-9))
    return pos[m - 1]


def ref_prf(a, y, frac=0.3):
    k, c = a.shape[1], y.shape[1]
    p, r, f = (np.zeros((k, c)) for _ in range(3))
    for u in range(k):
        t = ref_threshold(a[:, u], frac)
        b = [(not math.isnan(t)) and v >= t and v > 1e-7 for v in a[:, u]]
        for j in range(c):
            tp = sum(1 for n in range(len(b)) if b[n] and y[n, j] == 1)
            fired = sum(b)
            pos = sum(1 for n in range(len(b)) if y[n, j] == 1)
            p[u, j] = tp / fired if fired else 0.0
            r[u, j] = tp / pos if pos else 0.0
            f[u, j] = 2 * p[u, j] * r[u, j] / (p[u, j] + r[u, j]) if p[u, j] + r[u, j] else 0.0
    return p, r, f


# ---- hand-computed ----------------------------------------------------------------------------
def test_pearson_by_hand():
    a = np.array([[1, 0], [2, 0], [3, 0]], np.float32)  # unit 1 is dead (constant)
    y = np.array([[0], [1], [1]], np.float32)
    corr = correlation_matrix(a, y)
    # cov = 1, var_a = 2, var_y = 2/3  ->  rho = 1 / sqrt(4/3) = sqrt(3)/2
    assert corr[0, 0] == pytest.approx(math.sqrt(3) / 2, abs=1e-9)
    assert corr[1, 0] == 0.0


def test_constant_label_gives_zero():
    a = np.array([[1.0], [2.0], [5.0]], np.float32)
    assert correlation_matrix(a, np.ones((3, 1), np.float32))[0, 0] == 0.0


def test_entropy_by_hand():
    h = unit_entropy(np.array([[0.5, 0.5, 0.0], [0.9, 0.0, 0.0], [0.3, -0.3, 0.3]]))
    assert h[0] == pytest.approx(math.log(2), abs=1e-6)
    assert h[1] == pytest.approx(0.0, abs=1e-6)
    assert h[2] == pytest.approx(math.log(3), abs=1e-6)  # sign is ignored (|rho|)


def test_alive_and_best_unit_by_hand():
    corr = np.array([[0.1, 0.15], [0.5, -0.6], [0.3, 0.21], [0.9, 0.05]])
    alive = alive_by_correlation(corr)
    assert alive.tolist() == [False, True, True, True]
    h = unit_entropy(corr)
    best = best_unit_per_label(corr, h, alive)
    # label 0: best alive = unit 3 (0.9); label 1: signed argmax over alive = unit 2 (0.21),
    # not unit 1 (-0.6, larger in magnitude) and not unit 0 (0.15, not alive)
    assert best.unit_c.tolist() == [3, 2]
    assert best.corr_c.tolist() == [0.9, 0.21]
    assert best.mean_corr == pytest.approx(0.555)
    assert best.entropy_c.tolist() == [h[3], h[2]]
    none = best_unit_per_label(corr, h, np.zeros(4, bool))
    assert none.unit_c.tolist() == [-1, -1] and math.isnan(none.mean_corr)
    # A constant label has no best unit and does not enter the means.
    part = best_unit_per_label(corr, h, alive, valid_c=np.array([True, False]))
    assert part.unit_c.tolist() == [3, -1] and part.mean_corr == pytest.approx(0.9)


def test_varying_labels():
    y = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
    assert varying_labels(y).tolist() == [True, False, False]
    m = np.array([[True, True, True], [False, True, True]])
    assert varying_labels(y, m).tolist() == [False, False, False]


def test_monosemanticity_by_hand():
    s = 1 / math.sqrt(2)
    e = np.array([[1, 0], [1, 0], [s, s]], np.float32)
    a = np.array([[1, 2, 0, 3, 0],
                  [1, 0, 1, 3, 0],
                  [0, 1, 2, 3, 5]], np.float32)
    ms = monosemanticity_scores(a, e)
    # unit 0: a~ = [1, 1, 0]: the only weighted pair (0, 1) has cos 1
    assert ms[0] == pytest.approx(1.0, abs=1e-6)
    # unit 1: a~ = [1, 0, .5]: pair (0, 2) weight .5, cos = s
    assert ms[1] == pytest.approx(s, abs=1e-6)
    # unit 2: a~ = [0, .5, 1]: pair (1, 2) weight .5, cos = s
    assert ms[2] == pytest.approx(s, abs=1e-6)
    # unit 3 constant (dead), unit 4 active on one image (denominator 0): NaN
    assert math.isnan(ms[3]) and math.isnan(ms[4])


def test_threshold_and_f1_by_hand():
    # 10 positive activations: top 30 % = 3 images fire (values 10, 9, 8).
    col = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0], np.float32)
    thr = top_fraction_thresholds(col[None, :])
    assert thr[0] == 8.0
    y = np.zeros((12, 1), np.float32)
    y[[10, 9, 3, 0], 0] = 1  # two of the three firing images are positive; 4 positives
    p, r, f, _ = precision_recall_f1(col[:, None], y)
    assert p[0, 0] == pytest.approx(2 / 3) and r[0, 0] == pytest.approx(0.5)
    assert f[0, 0] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # A unit that is never positive never fires and scores 0.
    assert np.isnan(top_fraction_thresholds(np.zeros((1, 5), np.float32)))[0]
    p0, r0, f0, _ = precision_recall_f1(np.zeros((4, 1), np.float32), np.ones((4, 1)))
    assert p0[0, 0] == r0[0, 0] == f0[0, 0] == 0.0


def test_reconstruction_by_hand():
    acc = ReconAccumulator(2, 3)
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    acc.update(x, x, x, x, np.array([[1, 0, 0], [0, 2, 0]], np.float32))
    m = acc.finalize(np.array([0.5, 0.5, 0.0]))
    assert m["mse"] == 0 and m["fvu"] == 0 and m["cosine"] == pytest.approx(1)
    assert m["l0"] == 1 and m["dead_fraction"] == pytest.approx(1 / 3)
    assert m["dense_fraction"] == pytest.approx(2 / 3)
    acc2 = ReconAccumulator(2, 1)
    acc2.update(x, np.zeros_like(x) + 0.5, x, np.zeros_like(x) + 0.5, np.ones((2, 1)))
    # reconstruction constant: residual variance = input variance -> FVU 1
    assert acc2.finalize()["fvu"] == pytest.approx(1.0)


# ---- random data vs references ---------------------------------------------------------------
def _random_problem(rng, n=70, k=9, c=4, d=6):
    a = np.maximum(rng.normal(size=(n, k)), 0).astype(np.float32)
    a[:, 0] = 0                      # dead
    a[:, 1] = 0
    a[7, 1] = 3.0                    # active once
    a[:, 2] += 50.0                  # far from zero: exercises the shift
    a[:, 3] = rng.normal(size=n) * 0.1 - 0.2  # raw-like, negative values
    y = (rng.random((n, c)) < 0.3).astype(np.float32)
    y[:, 3] = 0                      # constant label
    e = rng.normal(size=(n, d)).astype(np.float32)
    return a, y, e


def test_accumulator_matches_references_on_random_data(rng):
    a, y, e = _random_problem(rng)
    acc = UnitAccumulator(a.shape[1], y.shape[1], e.shape[1])
    for s in range(0, len(a), 16):  # uneven chunks
        acc.update(a[s:s + 16], y[s:s + 16], None, e[s:s + 16])
    m = acc.finalize()
    np.testing.assert_allclose(m.corr_kc, ref_pearson(a, y), atol=1e-6)
    np.testing.assert_allclose(m.ms_k, ref_ms(a, e), rtol=1e-4, atol=1e-6, equal_nan=True)
    assert np.isnan(m.ms_k[:2]).all()
    np.testing.assert_allclose(m.frequency_k, (a > 1e-7).mean(0))
    np.testing.assert_allclose(m.mean_k, a.mean(0), rtol=1e-6)
    np.testing.assert_allclose(m.max_k, a.max(0))
    np.testing.assert_allclose(m.min_k, a.min(0))
    np.testing.assert_allclose(unit_entropy(m.corr_kc), ref_entropy(m.corr_kc), atol=1e-9)


def test_masked_pearson_matches_reference(rng):
    a, y, _ = _random_problem(rng)
    mask = rng.random(y.shape) > 0.25
    np.testing.assert_allclose(correlation_matrix(a, y, mask), ref_pearson(a, y, mask),
                               atol=1e-6)


def test_chunking_does_not_change_results(rng):
    a, y, e = _random_problem(rng, n=200)
    whole = UnitAccumulator(a.shape[1], y.shape[1], e.shape[1])
    whole.update(a, y, None, e)
    parts = UnitAccumulator(a.shape[1], y.shape[1], e.shape[1])
    for s in range(0, 200, 7):
        parts.update(a[s:s + 7], y[s:s + 7], None, e[s:s + 7])
    w, p = whole.finalize(), parts.finalize()
    # float32 activations: results agree to float32 precision whatever the chunking
    np.testing.assert_allclose(w.corr_kc, p.corr_kc, atol=1e-6)
    np.testing.assert_allclose(w.ms_k, p.ms_k, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_prf_matches_reference_on_random_data(rng):
    a, y, _ = _random_problem(rng, n=90)
    a[:, 4] = np.round(a[:, 4], 1)   # ties at the threshold
    p, r, f, thr = precision_recall_f1(a, y)
    rp, rr, rf = ref_prf(a, y)
    np.testing.assert_allclose(p, rp, atol=1e-12)
    np.testing.assert_allclose(r, rr, atol=1e-12)
    np.testing.assert_allclose(f, rf, atol=1e-12)
    np.testing.assert_array_equal(thr, [ref_threshold(a[:, u]) for u in range(a.shape[1])])
    # counts are additive over chunks
    b = fires(a, thr)
    whole = binary_counts(b, y)
    chunks = binary_counts(b[:40], y[:40]) + binary_counts(b[40:], y[40:])
    np.testing.assert_array_equal(whole.tp_kc, chunks.tp_kc)
    np.testing.assert_array_equal(whole.fired_kc, chunks.fired_kc)


def test_ms_with_zero_embedding_row(rng):
    a = rng.random((12, 3)).astype(np.float32)
    e = rng.normal(size=(12, 4)).astype(np.float32)
    e[5] = 0  # cos with a zero vector contributes 0 (not NaN)
    got = monosemanticity_scores(a, e)
    en = np.array([v / np.linalg.norm(v) if np.linalg.norm(v) else v for v in e.astype(float)])
    for u in range(3):
        t = (a[:, u] - a[:, u].min()) / (a[:, u].max() - a[:, u].min())
        num = sum(t[i] * t[j] * en[i] @ en[j] for i in range(12) for j in range(i + 1, 12))
        den = sum(t[i] * t[j] for i in range(12) for j in range(i + 1, 12))
        assert got[u] == pytest.approx(num / den, rel=1e-5)
