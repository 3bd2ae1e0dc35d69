"""SAE checkpoint format (DESIGN.md §4.2) and the torch-free numpy runtime."""

import base64
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.sae import SAE, load_sae, save_sae
from medsae_desktop.core.sae import checkpoint as ckpt

D_IN, D_SAE = 6, 16


def _tensors(rng, arch="relu"):
    t = {
        "W_enc": rng.standard_normal((D_IN, D_SAE)).astype(np.float32),
        "b_enc": rng.standard_normal(D_SAE).astype(np.float32) * 0.1,
        "W_dec": rng.standard_normal((D_SAE, D_IN)).astype(np.float32),
        "b_dec": rng.standard_normal(D_IN).astype(np.float32),
        "input_mean": rng.standard_normal(D_IN).astype(np.float32),
    }
    if arch in ("batchtopk", "jumprelu", "matryoshka"):
        t["threshold"] = np.abs(rng.standard_normal(D_SAE)).astype(np.float32)
    return t


def _cfg(arch="relu", **kw):
    cfg = {"arch": arch, "d_in": D_IN, "d_sae": D_SAE, "input_scale": 2.5,
           "k": 3 if arch in ("topk", "batchtopk", "matryoshka") else None}
    cfg.update(kw)
    return cfg


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"])
def test_round_trip_identical_outputs(tmp_path, rng, arch):
    t = _tensors(rng, arch)
    path = save_sae(tmp_path / "sae", t, _cfg(arch))
    sae = load_sae(path)
    mem = SAE.from_tensors(t, _cfg(arch))
    x = rng.standard_normal((7, D_IN)).astype(np.float32)
    np.testing.assert_array_equal(sae.encode(x), mem.encode(x))
    np.testing.assert_array_equal(sae.reconstruct(x), mem.reconstruct(x))
    assert sae.sae_id == hashlib.sha256((path / "sae.safetensors").read_bytes()).hexdigest()
    assert sae.sae_id == mem.sae_id
    assert (sae.arch, sae.d_in, sae.d_sae, sae.k) == (arch, D_IN, D_SAE, _cfg(arch)["k"])
    assert sae.cfg["schema_version"] == 1 and sae.cfg["complete"] is True
    assert (sae.threshold_s is None) == (arch in ("relu", "topk"))


def test_same_weights_same_id_and_bytes(tmp_path, rng):
    t = _tensors(rng)
    a = load_sae(save_sae(tmp_path / "a", t, _cfg()))
    b = load_sae(save_sae(tmp_path / "b", t, _cfg(metrics={"fvu": 0.1})))
    assert a.sae_id == b.sae_id  # the id depends on the weights only, not on cfg.json
    t2 = dict(t, b_enc=t["b_enc"] + 1e-3)
    assert load_sae(save_sae(tmp_path / "c", t2, _cfg())).sae_id != a.sae_id


def test_forward_formulas(rng):
    t = _tensors(rng, "jumprelu")
    x = rng.standard_normal((5, D_IN)).astype(np.float32)
    xt = (x - t["input_mean"]) * 2.5
    pre = (xt - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    for arch in ("relu", "topk", "jumprelu"):
        sae = SAE.from_tensors(t if arch == "jumprelu" else
                               {k: v for k, v in t.items() if k != "threshold"}, _cfg(arch))
        np.testing.assert_allclose(sae.normalize(x), xt, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(sae.pre_activations(x), pre, rtol=1e-5, atol=1e-5)
        acts = sae.encode(x)
        if arch == "relu":
            want = np.maximum(pre, 0)
        elif arch == "topk":
            want = np.zeros_like(pre)
            idx = np.argsort(-pre, axis=1)[:, :3]
            np.put_along_axis(want, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
        else:
            want = np.where(pre > t["threshold"], pre, 0)
        np.testing.assert_allclose(acts, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sae.decode(acts), acts @ t["W_dec"] + t["b_dec"],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sae.reconstruct(x), sae.decode(acts) / 2.5 + t["input_mean"],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"])
def test_single_image_equals_batch(rng, arch):
    sae = SAE.from_tensors(_tensors(rng, arch), _cfg(arch))
    x = rng.standard_normal((9, D_IN)).astype(np.float32)
    batch = sae.encode(x)
    for i in range(len(x)):
        one = sae.encode(x[i:i + 1])[0]
        # Same active set; values equal up to BLAS rounding (gemv vs gemm may differ by 1 ulp).
        np.testing.assert_array_equal(one > 0, batch[i] > 0)
        np.testing.assert_allclose(one, batch[i], rtol=1e-6, atol=1e-6)


def test_atomic_save_leaves_no_temp_files(tmp_path, rng):
    path = save_sae(tmp_path / "sae", _tensors(rng), _cfg())
    save_sae(path, _tensors(rng), _cfg())  # overwrite in place
    (path / "train_log.jsonl").write_text("{}\n")
    save_sae(path, _tensors(rng), _cfg())
    assert sorted(p.name for p in path.iterdir()) == ["cfg.json", "sae.safetensors",
                                                       "train_log.jsonl"]
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


def _corrupt(tmp_path, rng, how):
    path = save_sae(tmp_path / "sae", _tensors(rng), _cfg())
    cfg = json.loads((path / "cfg.json").read_text())
    w = path / "sae.safetensors"
    if how == "no_cfg":
        (path / "cfg.json").unlink()
    elif how == "bad_json":
        (path / "cfg.json").write_text("{not json")
    elif how == "no_weights":
        w.unlink()
    elif how == "truncated":
        w.write_bytes(w.read_bytes()[:-50])
    elif how == "garbage":
        w.write_bytes(b"\x00" * 64)
    elif how == "newer":
        cfg["schema_version"] = 99
    elif how == "no_version":
        del cfg["schema_version"]
    elif how == "old_unknown":
        cfg["schema_version"] = 0
    elif how == "arch":
        cfg["arch"] = "gated"
    elif how == "d_sae":
        cfg["d_sae"] = D_SAE + 1
        cfg.pop("sae_sha256")
    elif how == "mismatch":
        cfg["sae_sha256"] = "0" * 64
    elif how == "scale":
        cfg["input_scale"] = -1
    if how in ("newer", "no_version", "old_unknown", "arch", "d_sae", "mismatch", "scale"):
        (path / "cfg.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("how, words", [
    ("no_cfg", "no cfg.json"), ("bad_json", "not valid JSON"),
    ("no_weights", "no sae.safetensors"), ("truncated", "truncated"), ("garbage", "truncated"),
    ("newer", "newer than this program"), ("no_version", "schema_version"),
    ("old_unknown", "unknown SAE schema_version 0"), ("arch", "unknown SAE arch"),
    ("d_sae", "expected"), ("mismatch", "does not match"), ("scale", "input_scale"),
])
def test_validating_loader_errors(tmp_path, rng, how, words):
    path = _corrupt(tmp_path, rng, how)
    with pytest.raises(MedsaeError, match=words) as exc:
        load_sae(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_nan_weights_and_missing_threshold_rejected(tmp_path, rng):
    t = _tensors(rng)
    t["W_dec"][0, 0] = np.nan
    with pytest.raises(MedsaeError, match="NaN"):
        save_sae(tmp_path / "a", t, _cfg())
    with pytest.raises(MedsaeError, match="threshold"):
        save_sae(tmp_path / "b", _tensors(rng, "relu"), _cfg("batchtopk"))
    with pytest.raises(MedsaeError, match="needs an integer k"):
        save_sae(tmp_path / "c", _tensors(rng), _cfg("topk", k=None))
    assert not (tmp_path / "a").exists()
    with pytest.raises(MedsaeError, match="not found"):
        load_sae(tmp_path / "nothing")


def test_migration_hook_runs_in_order(tmp_path, rng, monkeypatch):
    path = save_sae(tmp_path / "sae", _tensors(rng), _cfg())
    cfg = json.loads((path / "cfg.json").read_text())
    cfg["schema_version"] = 0
    cfg["old_scale_name"] = cfg.pop("input_scale")
    (path / "cfg.json").write_text(json.dumps(cfg))

    def v0_to_v1(c, t):
        c["input_scale"] = c.pop("old_scale_name")
        return c, t

    monkeypatch.setitem(ckpt._MIGRATIONS, 0, v0_to_v1)
    sae = load_sae(path)
    assert sae.cfg["schema_version"] == 1 and sae.input_scale == 2.5


# A schema-1 checkpoint written by the first release (d_in 2, d_sae 3, relu). It must keep
# loading, with these outputs, for as long as schema 1 is supported.
_V1_WEIGHTS = (
    "WAEAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJzY2hlbWFfdmVyc2lvbiI6IjEifSwiV19kZWMiOnsiZHR5cGUiOiJGMzIi"
    "LCJzaGFwZSI6WzMsMl0sImRhdGFfb2Zmc2V0cyI6WzAsMjRdfSwiV19lbmMiOnsiZHR5cGUiOiJGMzIiLCJzaGFwZSI6"
    "WzIsM10sImRhdGFfb2Zmc2V0cyI6WzI0LDQ4XX0sImJfZGVjIjp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlsyXSwiZGF0"
    "YV9vZmZzZXRzIjpbNDgsNTZdfSwiYl9lbmMiOnsiZHR5cGUiOiJGMzIiLCJzaGFwZSI6WzNdLCJkYXRhX29mZnNldHMi"
    "Ols1Niw2OF19LCJpbnB1dF9tZWFuIjp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlsyXSwiZGF0YV9vZmZzZXRzIjpbNjgs"
    "NzZdfX0gIAAAgD8AAAAAAAAAAAAAgD/zBDU/8wQ1PwAAgD8AAAAA8wQ1PwAAAAAAAIA/8wQ1PwAAAD8AAAC/AAAAAAAA"
    "AADNzMy9AAAAAAAAAAA=")
_V1_CFG = {"arch": "relu", "complete": True, "created_by": "medsae-desktop 0.1.0", "d_in": 2,
           "d_sae": 3, "encoder": {"key": "fixture"}, "input_scale": 2.0, "k": None,
           "l1": 0.03, "metrics": {}, "schema_version": 1, "train": {}}


def test_schema1_fixture_still_loads(tmp_path):
    d = tmp_path / "v1"
    d.mkdir()
    (d / "sae.safetensors").write_bytes(base64.b64decode(_V1_WEIGHTS))
    (d / "cfg.json").write_text(json.dumps(_V1_CFG))
    sae = load_sae(d)
    x = np.array([[1.0, 0.0], [0.25, 0.75]], np.float32)
    # x̃ = 2x; pre = (x̃ − b_dec)·W_enc + b_enc, W_enc = [[1, 0, √½], [0, 1, √½]], b_dec = (½, −½)
    r = np.sqrt(0.5)
    want_pre = np.array([[1.5, 0.5, 2 * r - 0.1], [0.0, 2.0, 2 * r - 0.1]], np.float32)
    np.testing.assert_allclose(sae.pre_activations(x), want_pre, rtol=1e-5, atol=1e-6)
    acts = sae.encode(x)
    np.testing.assert_allclose(acts, np.maximum(want_pre, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sae.decode(acts)[1], [0.0 + (2 * r - 0.1) * r + 0.5,
                                                     2.0 + (2 * r - 0.1) * r - 0.5], rtol=1e-5)
    assert sae.sae_id == hashlib.sha256(base64.b64decode(_V1_WEIGHTS)).hexdigest()


def test_runtime_never_imports_torch(tmp_path, rng):
    path = save_sae(tmp_path / "sae", _tensors(rng, "batchtopk"), _cfg("batchtopk"))
    code = ("import sys, numpy as np; from medsae_desktop.core.sae import load_sae; "
            f"s = load_sae({str(path)!r}); s.encode(np.zeros((1, {D_IN}), np.float32)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
