"""Shared viewer/inspect logic: population percentiles, contribution maps, overlays."""

import numpy as np
import pytest

from medsae_desktop.core import inspection as ins
from medsae_desktop.core.annotations import FeatureName
from medsae_desktop.core.cache import write_cache
from medsae_desktop.core.progress import run_job
from medsae_desktop.core.sae import SAE


def make_sae(rng, d_in=16, d_sae=32, arch="relu"):
    cfg = {"arch": arch, "d_in": d_in, "d_sae": d_sae, "input_scale": 2.0, "k": None}
    tensors = {
        "W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32),
        "b_enc": rng.normal(scale=0.5, size=d_sae).astype(np.float32),
        "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
        "b_dec": rng.normal(scale=0.1, size=d_in).astype(np.float32),
        "input_mean": rng.normal(scale=0.1, size=d_in).astype(np.float32),
    }
    return SAE.from_tensors(tensors, cfg)


@pytest.fixture
def cache_and_sae(tmp_path, rng):
    sae = make_sae(rng)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    y = (rng.random((300, 3)) < 0.3).astype(np.float32)
    y[::7, 1] = np.nan
    path = write_cache(tmp_path / "c.h5", x, labels_nc=y, label_names=["a", "b", "c"],
                       encoder={"key": "demo"})
    return path, sae, x, y


def test_population_stats_match_brute_force(cache_and_sae, tmp_path):
    path, sae, x, y = cache_and_sae
    stats = run_job(ins.population_job(path, sae, chunk_rows=64, out_path=tmp_path / "p.npz"))
    acts = sae.encode(x)
    assert stats.n_images == 300
    np.testing.assert_array_equal(stats.n_pos_s, (acts > 0).sum(0))
    np.testing.assert_allclose(stats.mean_s, acts.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.max_s, acts.max(0), rtol=1e-6)
    for k in range(sae.d_sae):
        exact = np.sort(acts[:, k])[::-1][: ins.TOP_M]
        got = stats.top_vals_sm[k]
        np.testing.assert_allclose(got[got > 0], exact[exact > 0], rtol=1e-6)
        rows = stats.top_rows_sm[k][got > 0]
        np.testing.assert_allclose(acts[rows, k], got[got > 0], rtol=1e-6)
    # percentiles: fraction strictly below, within one image of the exact value
    for k in range(0, sae.d_sae, 3):
        for n in range(0, 300, 37):
            v = acts[n, k]
            exact = 100.0 * (acts[:, k] < v).mean()
            assert abs(stats.percentile(k, v) - exact) <= 100.0 / 300 + 1e-9, (k, n)
    assert stats.percentile(0, 0.0) == 0.0
    assert stats.percentile(0, float(acts[:, 0].max()) * 10 + 1) == 100.0
    # correlation: Pearson with NaN → 0 (DESIGN.md §5.3)
    y0 = np.nan_to_num(y, nan=0.0)
    for k in range(0, sae.d_sae, 5):
        for c in range(3):
            if acts[:, k].std() == 0:
                assert stats.corr_sc[k, c] == 0
                continue
            want = np.corrcoef(acts[:, k], y0[:, c])[0, 1]
            assert stats.corr_sc[k, c] == pytest.approx(want, abs=1e-4)
    # histogram accounts for every active image
    edges, counts, n_zero = stats.histogram(3)
    assert counts.sum() == pytest.approx(stats.n_pos_s[3])
    assert n_zero == 300 - stats.n_pos_s[3]


def test_population_is_saved_and_reused(cache_and_sae, tmp_path):
    path, sae, _, _ = cache_and_sae
    out = tmp_path / "p.npz"
    first = run_job(ins.population_job(path, sae, out_path=out))
    assert out.is_file()
    job = ins.population_job(path, sae, out_path=out)
    msgs = []
    again = run_job(job, lambda p: msgs.append(p.message))
    assert msgs == ["population statistics reused"]
    np.testing.assert_array_equal(first.pos_quantiles_qs, again.pos_quantiles_qs)
    assert again.label_names == ("a", "b", "c")
    other = make_sae(np.random.default_rng(5))
    third = run_job(ins.population_job(path, other, out_path=out))
    assert third.sae_id == other.sae_id  # not reused for another SAE


def test_contribution_maps_add_up_to_the_global_pre_activation(rng):
    sae = make_sae(rng)
    patches = rng.normal(size=(49, 16)).astype(np.float32)
    emb = patches.mean(0)
    res = ins.inspect_embedding(emb, patches, sae, image_hw=(300, 200), encoder={"key": "t"},
                                top_n=5)
    pre_global = sae.pre_activations(emb[None])[0]
    for k in range(sae.d_sae):
        assert res.map_77(k).mean() == pytest.approx(pre_global[k], abs=1e-4)
    acts = [h.activation for h in res.top]
    assert acts == sorted(acts, reverse=True) and all(a > 0 for a in acts)
    assert res.top[0].unit == int(np.argmax(res.acts_s))
    assert res.top[0].percentile is None and res.top[0].name.startswith("unnamed #")


def test_names_and_percentiles_in_hits(rng, cache_and_sae, tmp_path):
    path, sae, x, _ = cache_and_sae
    stats = run_job(ins.population_job(path, sae, out_path=tmp_path / "p.npz"))
    patches = np.repeat(x[:1], 49, axis=0)
    k = int(np.argmax(sae.encode(x[:1])[0]))
    names = {k: FeatureName(sae.sae_id, k, "cardiomegaly", "", "labels", 0.5, "accepted", "",
                            "a", "t")}
    res = ins.inspect_embedding(x[0], patches, sae, image_hw=(10, 10), encoder={},
                                population=stats, names=names, top_n=3)
    assert res.top[0].unit == k and res.top[0].name == "cardiomegaly"
    exact = 100 * (sae.encode(x)[:, k] < res.top[0].activation).mean()
    assert abs(res.top[0].percentile - exact) <= 100 / 300 + 1e-9
    assert res.to_json()["features"][0]["status"] == "accepted"


def test_upsample_matches_torch_interpolate_and_undoes_letterbox(rng):
    torch = pytest.importorskip("torch")
    grid = rng.normal(size=(7, 7)).astype(np.float32)
    h, w = 150, 410  # wide: letterboxed vertically
    side, off_x, off_y = max(224, w, h), (410 - w) // 2, (410 - h) // 2
    full = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None], size=(side, side), mode="bilinear",
        align_corners=False)[0, 0].numpy()
    want = full[off_y:off_y + h, off_x:off_x + w]
    got = ins.upsample_map(grid, (h, w))
    assert got.shape == (h, w)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_padding_is_masked_and_small_images_are_centred(rng):
    grid = np.zeros((7, 7), np.float32)
    grid[3, 3] = 1.0  # centre cell
    mask = np.zeros((100, 60), bool)
    mask[:, :5] = True
    heat = ins.upsample_map(grid, (100, 60), mask)
    assert np.isnan(heat[:, :5]).all() and not np.isnan(heat[:, 5:]).any()
    # a 100x60 image sits in the middle of the 224 square, inside the centre cell's reach:
    # near 1 in its middle (cell centre at square pixel 112), lower towards its corners
    assert heat[50, 30] == pytest.approx(1.0, abs=0.04)
    assert 0.0 <= heat[5, 5] < 0.5 * heat[50, 30]


def test_overlay_layers_and_compositing(rng):
    heat = np.linspace(-1, 1, 200 * 100, dtype=np.float32).reshape(200, 100)
    heat[0, 0] = np.nan
    lut = ins.colormap_lut("inferno")
    lay = ins.overlay_layer(heat, lut, opacity=0.5)
    assert lay.vmax == pytest.approx(1.0) and lay.vmin == 0.0  # negative minimum → floor 0
    assert (lay.rgba_hw4[heat <= 0.25, 3] == 0).all() and lay.rgba_hw4[0, 0, 3] == 0
    assert (lay.rgba_hw4[heat >= 0.76, 3] == 128).all()  # full opacity from 3/4 of the range
    mid = (heat > 0.3) & (heat < 0.7)
    assert ((lay.rgba_hw4[mid, 3] > 0) & (lay.rgba_hw4[mid, 3] < 128)).all()
    gray = rng.integers(0, 256, (200, 100), dtype=np.uint8)
    out = ins.composite(gray, lay.rgba_hw4)
    np.testing.assert_array_equal(out[heat <= 0], np.repeat(gray[heat <= 0, None], 3, 1))
    assert (out[-1, -1] != gray[-1, -1]).any()
    # merging layers then compositing == compositing them one after the other
    lay2 = ins.overlay_layer(heat[::-1].copy(), ins.solid_lut((64, 200, 255)), opacity=0.7)
    merged = ins.merge_layers([lay.rgba_hw4, lay2.rgba_hw4])
    seq = ins.composite(out[..., 0], None)  # placeholder shape check
    assert seq.shape == (200, 100, 3)
    step1 = ins.composite(gray, lay.rgba_hw4).astype(np.float32)
    a2 = lay2.rgba_hw4[..., 3:4] / 255
    step2 = lay2.rgba_hw4[..., :3] * a2 + step1 * (1 - a2)
    np.testing.assert_allclose(ins.composite(gray, merged), step2, atol=1.5)


def test_feature_luts():
    assert ins.feature_luts(1)[0].shape == (256, 3)
    luts = ins.feature_luts(3)
    assert len({tuple(lut[0]) for lut in luts}) == 3


def test_map_range_floor():
    # positive everywhere: scaled from its own minimum
    assert ins.map_range(np.array([[2.0, 4.0], [3.0, np.nan]])) == (2.0, 4.0)
    # nearly flat: the floor stays at half the maximum (no exaggerated contrast)
    assert ins.map_range(np.array([[9.9, 10.0]])) == (5.0, 10.0)
    # nothing positive: nothing shown
    lay = ins.overlay_layer(np.full((4, 4), -1.0, np.float32), ins.colormap_lut("inferno"))
    assert (lay.rgba_hw4[..., 3] == 0).all()


def test_thumbnail_sampling_matches_full_resolution(rng):
    grid = rng.normal(size=(7, 7)).astype(np.float32)
    full = ins.upsample_map(grid, (400, 300))
    np.testing.assert_allclose(ins.upsample_map(grid, (400, 300), out_hw=(400, 300)), full,
                               atol=1e-5)
    # on a plane, bilinear interpolation is exact, so a thumbnail pixel equals the plane at
    # its image position ((i + .5) * 4 - .5, (j + .5) * 4 - .5), i.e. the mean of 2x2 pixels
    rr, cc = np.mgrid[0:7, 0:7]
    plane = (0.3 * rr - 0.2 * cc).astype(np.float32)
    full = ins.upsample_map(plane, (400, 300))
    small = ins.upsample_map(plane, (400, 300), out_hw=(100, 75))
    pooled = full.reshape(100, 4, 75, 4)[:, 1:3, :, 1:3].mean(axis=(1, 3))
    inner = (slice(10, 90), slice(8, 67))  # away from the clamped border cells
    np.testing.assert_allclose(small[inner], pooled[inner], atol=1e-4)


def test_default_overlay_units():
    H = ins.FeatureHit
    assert ins.default_overlay_units([]) == []
    named = [H(3, "effusion", 2.0, None, "accepted"), H(5, "unnamed #5", 1.0, None, "")]
    assert ins.default_overlay_units(named) == [3]
    top_unnamed = [H(1, "unnamed #1", 3.0, None, ""), H(2, "x", 2.5, None, "rejected"),
                   H(4, "nodule (proposed)", 2.0, None, "proposed")]
    assert ins.default_overlay_units(top_unnamed) == [1, 4]
    assert ins.default_overlay_units(top_unnamed[:2]) == [1]


def test_overlay_grid_for_large_images(rng):
    assert ins.overlay_step((1955, 1841)) == 2 and ins.overlay_step((512, 512)) == 1
    grid = rng.normal(size=(7, 7)).astype(np.float32)
    h, w = 2050, 1301  # step 3
    mask = np.zeros((h, w), bool)
    mask[:, :40] = True
    full = ins.upsample_map(grid, (h, w), mask)
    coarse = ins.upsample_map(grid, (h, w), mask, step=3)
    assert coarse.shape == (-(-h // 3), -(-w // 3))
    # each coarse value is the full-resolution value at its block centre
    np.testing.assert_allclose(coarse[5, 20], full[5 * 3 + 1, 20 * 3 + 1], atol=1e-5)
    assert np.isnan(coarse[:, :13]).all() and not np.isnan(coarse[:, 14:]).any()
    lay = ins.overlay_layer(coarse, ins.colormap_lut("viridis"))
    big = ins.expand_overlay(lay.rgba_hw4, (h, w))
    assert big.shape == (h, w, 4)
    np.testing.assert_array_equal(big[3:6, 60:63], np.broadcast_to(lay.rgba_hw4[1, 20], (3, 3, 4)))
