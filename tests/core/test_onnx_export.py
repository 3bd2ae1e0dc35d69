"""ONNX export and the onnxruntime backend: parity with torch, dynamic batch, SAE outputs,
metadata, torch-free use, the per-user export cache and ``medsae export-onnx``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from medsae_desktop.cli import main  # noqa: E402
from medsae_desktop.core.encoders import make_encoder, preprocess_renders  # noqa: E402
from medsae_desktop.core.encoders.export import META_ENCODER, export_onnx  # noqa: E402
from medsae_desktop.core.encoders.heads import THRESHOLD_ARCHS, SAEHead  # noqa: E402
from medsae_desktop.core.encoders.onnx_backend import OnnxEncoder  # noqa: E402
from medsae_desktop.core.errors import MedsaeError  # noqa: E402
from medsae_desktop.core.sae import SAE, save_sae  # noqa: E402
from medsae_desktop.core.sae import THRESHOLD_ARCHS as RUNTIME_THRESHOLD_ARCHS  # noqa: E402

D_SAE = 64


def renders(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(180, 360, size=2))
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        img = 0.3 + 0.5 * (((yy - rng.random()) / 0.3) ** 2 + ((xx - rng.random()) / 0.2) ** 2
                           < 1) + 0.05 * rng.standard_normal((h, w))
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return out


def sae_tensors(arch, seed=0, d_in=512):
    rng = np.random.default_rng(seed)
    t = {"W_enc": (rng.standard_normal((d_in, D_SAE)) / np.sqrt(d_in)).astype(np.float32),
         "b_enc": 0.1 * rng.standard_normal(D_SAE).astype(np.float32),
         "W_dec": (rng.standard_normal((D_SAE, d_in)) / np.sqrt(d_in)).astype(np.float32),
         "b_dec": 0.01 * rng.standard_normal(d_in).astype(np.float32),
         "input_mean": 0.01 * rng.standard_normal(d_in).astype(np.float32)}
    if arch in RUNTIME_THRESHOLD_ARCHS:
        t["threshold"] = np.abs(0.2 * rng.standard_normal(D_SAE)).astype(np.float32)
    cfg = {"arch": arch, "d_in": d_in, "d_sae": D_SAE, "input_scale": 3.0,
           "k": 8 if arch in ("topk", "batchtopk", "matryoshka") else None}
    return t, cfg


def make_sae(arch, seed=0):
    return SAE.from_tensors(*sae_tensors(arch, seed))


@pytest.fixture(scope="module")
def demo():
    with make_encoder("demo") as enc:
        yield enc


@pytest.fixture(scope="module")
def demo_sae_onnx(demo, tmp_path_factory):
    sae = make_sae("topk")
    path = export_onnx(demo, tmp_path_factory.mktemp("onnx") / "demo_sae.onnx", sae=sae,
                       batch_size=2)
    return path, sae


def test_threshold_archs_match_the_sae_runtime():
    assert THRESHOLD_ARCHS == RUNTIME_THRESHOLD_ARCHS


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_sae_head_matches_numpy_runtime(arch, rng):
    sae = make_sae(arch, seed=1)
    emb = rng.standard_normal((5, 512)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    patches = (rng.standard_normal((5, 49, 512)) / np.sqrt(512)).astype(np.float32)
    with torch.inference_mode():
        codes, pre = SAEHead(sae)(torch.from_numpy(emb), torch.from_numpy(patches))
    expected = sae.encode(emb)
    assert (expected > 0).any() and (expected == 0).any()  # the activation did something
    np.testing.assert_allclose(codes.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(pre.numpy(), sae.pre_activations(patches.reshape(-1, 512))
                               .reshape(5, 49, D_SAE), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_demo_parity_dynamic_batch_with_sae(demo, demo_sae_onnx, batch):
    path, sae = demo_sae_onnx
    x = preprocess_renders(renders(batch, seed=batch))
    ref = demo.encode(x, patches=True)
    enc = OnnxEncoder(path)
    got = enc.encode(x, patches=True)
    assert got.embeddings_bd.shape == (batch, 512) and got.patches_bpd.shape == (batch, 49, 512)
    assert np.abs(got.embeddings_bd - ref.embeddings_bd).max() <= 1e-4
    assert np.abs(got.patches_bpd - ref.patches_bpd).max() <= 1e-4
    out = enc.run_all(x)
    assert set(out) == {"embedding", "patch_embeddings", "sae_codes", "sae_patch_preacts"}
    np.testing.assert_allclose(out["sae_codes"], sae.encode(ref.embeddings_bd), atol=1e-4)
    np.testing.assert_allclose(
        out["sae_patch_preacts"],
        sae.pre_activations(ref.patches_bpd.reshape(-1, 512)).reshape(batch, 49, D_SAE),
        atol=1e-4)
    assert enc.has_sae and enc.sae_meta["sae_id"] == sae.sae_id
    assert enc.sae_meta["arch"] == "topk" and enc.sae_meta["d_sae"] == D_SAE


def test_metadata_describes_the_encoder(demo, demo_sae_onnx):
    model = onnx.load(str(demo_sae_onnx[0]), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    info = json.loads(meta[META_ENCODER])
    assert info == demo.info.replace(backend="onnx").to_json()
    assert model.opset_import[0].version == 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    enc = OnnxEncoder(demo_sae_onnx[0])
    assert enc.info == demo.info.replace(backend="onnx")
    assert enc.providers == ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def swin_dir(tmp_path_factory):
    from medsae_desktop.core.encoders.swin import MedCLIPSwin

    torch.manual_seed(5)
    sd = {"vision_model." + k: v for k, v in MedCLIPSwin().state_dict().items()}
    d = tmp_path_factory.mktemp("swin")
    torch.save(sd, d / "pytorch_model.bin")
    return d


def test_swin_parity_dynamic_batch(swin_dir, tmp_path):
    enc = make_encoder("medclip-swin", weights_dir=swin_dir)
    path = export_onnx(enc, tmp_path / "swin.onnx", batch_size=2)
    onx = OnnxEncoder(path)
    assert onx.info.variant == "swin-tiny"
    for batch in (1, 3):
        x = preprocess_renders(renders(batch, seed=10 + batch))
        ref, got = enc.encode(x, patches=True), onx.encode(x, patches=True)
        assert np.abs(got.embeddings_bd - ref.embeddings_bd).max() <= 1e-4
        assert np.abs(got.patches_bpd - ref.patches_bpd).max() <= 1e-4
        np.testing.assert_allclose(got.patches_bpd.mean(1), got.embeddings_bd, atol=1e-6)


_TORCH_FREE = """
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
import numpy as np
from medsae_desktop.core.encoders import make_encoder
enc = make_encoder("demo", backend="onnx", onnx_path={onnx!r})
res = enc.encode(np.load({x!r}), patches=True)
np.save({out!r}, res.patches_bpd)
try:
    make_encoder("demo")
except Exception as e:
    print(type(e).__name__, e)
"""


def test_onnx_backend_works_without_torch(demo, demo_sae_onnx, tmp_path):
    x = preprocess_renders(renders(2, seed=7))
    np.save(tmp_path / "x.npy", x)
    code = _TORCH_FREE.format(onnx=str(demo_sae_onnx[0]), x=str(tmp_path / "x.npy"),
                              out=str(tmp_path / "out.npy"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MedsaeError" in r.stdout and "needs PyTorch" in r.stdout
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"),
                               demo.encode(x, patches=True).patches_bpd, atol=1e-4)


def test_onnx_backend_exports_to_user_cache_once(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    enc = make_encoder("demo", backend="onnx")
    files = list((tmp_path / "cache" / "medsae-desktop" / "onnx").glob("*.onnx"))
    assert len(files) == 1 and demo.info.weights_sha256[:16] in files[0].name
    assert enc.info.backend == "onnx" and enc.info.key == "demo"
    mtime = files[0].stat().st_mtime_ns
    enc2 = make_encoder("demo", backend="onnx")
    assert files[0].stat().st_mtime_ns == mtime  # reused, not re-exported
    x = preprocess_renders(renders(1))
    np.testing.assert_allclose(enc2.encode(x).embeddings_bd, demo.encode(x).embeddings_bd,
                               atol=1e-4)
    with pytest.raises(MedsaeError, match="ONNX model is demo"):
        make_encoder("medclip-resnet", backend="onnx", onnx_path=files[0])
    with pytest.raises(MedsaeError, match="fp32"):
        make_encoder("demo", backend="onnx", precision="bf16")


def test_bad_onnx_files(tmp_path):
    with pytest.raises(MedsaeError, match="not found"):
        OnnxEncoder(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(MedsaeError, match="cannot load ONNX model"):
        OnnxEncoder(tmp_path / "junk.onnx")
    # A valid ONNX model that is not a medsae export.
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["pixels"], ["embedding"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 512])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "other.onnx"))
    with pytest.raises(MedsaeError, match="not a medsae export"):
        OnnxEncoder(tmp_path / "other.onnx")


def test_cli_export_onnx(demo, tmp_path, capsys):
    t, cfg = sae_tensors("relu")
    sae_dir = save_sae(tmp_path / "sae", t, cfg | {"encoder": demo.info.to_json()})
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", "--encoder", "demo", "--sae", str(sae_dir), "-o", str(out)]) == 0
    enc = OnnxEncoder(out)
    assert enc.has_sae and enc.info.key == "demo"
    assert "wrote" in capsys.readouterr().err

    assert main(["export-onnx", "--encoder", "medclip-resnet", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs --weights" in err and len(err.strip().splitlines()) == 1

    other = tmp_path / "sae_other"
    save_sae(other, t, cfg | {"encoder": {"key": "medclip-swin", "weights_sha256": "ab" * 32}})
    assert main(["export-onnx", "--encoder", "demo", "--sae", str(other), "-o",
                 str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert "trained on encoder 'medclip-swin'" in err and not (tmp_path / "x.onnx").exists()


def test_cli_export_medclip_resnet_weights(tmp_path, capsys):
    from medsae_desktop.core.encoders.checkpoint import sha256_file
    from medsae_desktop.core.encoders.demo import make_demo_vision

    # Demo weights saved in the official layout stand in for a real MedCLIP checkpoint.
    sd = {"vision_model." + k: v for k, v in make_demo_vision().state_dict().items()}
    sd["text_model.projection_head.weight"] = torch.zeros(512, 768)
    wdir = tmp_path / "w"
    wdir.mkdir()
    torch.save(sd, wdir / "pytorch_model.bin")
    out = tmp_path / "r.onnx"
    assert main(["export-onnx", "--encoder", "medclip-resnet", "--weights", str(wdir),
                 "-o", str(out)]) == 0
    enc = make_encoder("medclip-resnet", weights_dir=wdir, backend="onnx", onnx_path=out)
    assert enc.info.weights_sha256 == sha256_file(wdir / "pytorch_model.bin")
    assert not enc.has_sae
    x = preprocess_renders(renders(2, seed=3))
    ref = make_encoder("medclip-resnet", weights_dir=wdir).encode(x, patches=True)
    got = enc.encode(x, patches=True)
    assert np.abs(got.embeddings_bd - ref.embeddings_bd).max() <= 1e-4
    assert np.abs(got.patches_bpd - ref.patches_bpd).max() <= 1e-4
