"""The demo encoder: interface contract, determinism, informative embeddings, bf16 option."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from medsae_desktop.core.encoders import (  # noqa: E402
    EncodeResult,
    EncoderInfo,
    make_encoder,
    preprocess_renders,
)
from medsae_desktop.core.errors import MedsaeError  # noqa: E402


def distinct_images(n=8, seed=0):
    """Different synthetic radiograph-like renders (sizes, blobs, noise levels)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(200, 400, size=2))
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        img = 0.3 + 0.2 * rng.random() * yy
        for _ in range(int(rng.integers(1, 5))):
            cy, cx, ry, rx = rng.random(4) * [1, 1, 0.3, 0.3] + [0, 0, 0.05, 0.05]
            img = img + (rng.random() - 0.3) * (((yy - cy) / ry) ** 2
                                                + ((xx - cx) / rx) ** 2 < 1)
        img = img + 0.05 * rng.standard_normal((h, w)) * (i % 3)
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def demo():
    enc = make_encoder("demo")
    yield enc
    enc.close()


def test_info(demo):
    info = demo.info
    assert isinstance(info, EncoderInfo)
    assert (info.key, info.variant, info.backend, info.d_out, info.grid) == (
        "demo", "resnet50", "torch", 512, (7, 7))
    assert "untrained demo weights" in info.label
    assert len(info.weights_sha256) == 64
    pre = info.preprocessing
    assert (pre["size"], pre["mean"], pre["std"], pre["pad"], pre["resize"]) == (
        224, 0.5862785803043838, 0.27950088968644304, "square-black-centred", "bicubic")
    d = info.to_json()
    assert json.loads(json.dumps(d)) == d
    assert EncoderInfo.from_json(d) == info
    with pytest.raises(Exception):
        info.key = "x"  # frozen


def test_encode_contract(demo):
    imgs = distinct_images(3)
    x = preprocess_renders(imgs)
    res = demo.encode(x, patches=True)
    assert isinstance(res, EncodeResult)
    assert res.embeddings_bd.shape == (3, 512) and res.embeddings_bd.dtype == np.float32
    assert res.patches_bpd.shape == (3, 49, 512) and res.patches_bpd.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(res.embeddings_bd, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(res.patches_bpd.mean(axis=1), res.embeddings_bd, atol=2e-7,
                               rtol=0)
    assert demo.encode(x).patches_bpd is None
    # One image alone gives the same embedding as inside a batch.
    one = demo.encode(x[1:2]).embeddings_bd
    np.testing.assert_allclose(one[0], res.embeddings_bd[1], atol=1e-5)
    # encode_renders == preprocess + encode; a 1-channel input is repeated to 3.
    np.testing.assert_allclose(demo.encode_renders(imgs).embeddings_bd, res.embeddings_bd,
                               atol=1e-6)
    np.testing.assert_allclose(demo.encode(x[:, :1]).embeddings_bd, res.embeddings_bd,
                               atol=1e-6)
    assert demo.encode(x[:0], patches=True).patches_bpd.shape == (0, 49, 512)
    with pytest.raises(ValueError, match="pixels_bchw"):
        demo.encode(np.zeros((1, 3, 100, 100), np.float32))


def test_embeddings_are_informative(demo):
    emb_nd = demo.encode_renders(distinct_images(8)).embeddings_bd
    cos_nn = emb_nd @ emb_nd.T
    off = cos_nn[np.triu_indices(len(emb_nd), 1)]
    assert off.mean() < 0.99, off.mean()
    assert off.min() > -0.99  # not degenerate the other way either
    # The spatial maps carry structure too: cells of one image are not all the same.
    p = demo.encode_renders(distinct_images(1), patches=True).patches_bpd[0]
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    assert (p @ p.T).mean() < 0.99


_HASH_SCRIPT = """
import hashlib, sys
sys.path.insert(0, {test_dir!r})
from test_encoders_demo import distinct_images
from medsae_desktop.core.encoders import make_encoder
enc = make_encoder("demo")
res = enc.encode_renders(distinct_images(2), patches=True)
import numpy as np
np.save({out!r}, res.embeddings_bd)
print(enc.info.weights_sha256)
print(hashlib.sha256(res.embeddings_bd.tobytes() + res.patches_bpd.tobytes()).hexdigest())
"""


def test_deterministic_across_processes(demo, tmp_path):
    code = _HASH_SCRIPT.format(test_dir=os.path.dirname(__file__),
                               out=str(tmp_path / "emb.npy"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    outs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(r.stdout.split())
    assert outs[0] == outs[1]
    assert outs[0][0] == demo.info.weights_sha256
    # This process may use another thread count: equal to float rounding, not bit for bit.
    np.testing.assert_allclose(demo.encode_renders(distinct_images(2)).embeddings_bd,
                               np.load(tmp_path / "emb.npy"), atol=1e-5)


def test_bf16_precision_is_close_to_fp32(demo):
    x = preprocess_renders(distinct_images(3))
    fast = make_encoder("demo", precision="bf16")
    assert fast.info.precision == "bf16"
    a = demo.encode(x, patches=True)
    b = fast.encode(x, patches=True)
    assert b.embeddings_bd.dtype == np.float32
    cos_b = np.sum(a.embeddings_bd * b.embeddings_bd, axis=1)
    assert cos_b.min() >= 0.999, cos_b


def test_bad_arguments():
    with pytest.raises(MedsaeError, match="unknown encoder"):
        make_encoder("clip")
    with pytest.raises(MedsaeError, match="unknown backend"):
        make_encoder("demo", backend="tensorrt")
    with pytest.raises(ValueError, match="precision"):
        make_encoder("demo", precision="int8")


def test_auto_precision_uses_bf16_only_where_native(monkeypatch):
    from medsae_desktop.core.encoders import factory

    monkeypatch.setattr(factory, "cpu_has_fast_bf16", lambda: False)
    assert factory.resolve_precision("auto", "torch", "cpu") == "fp32"
    assert factory.resolve_precision("auto", "onnx", "cpu") == "fp32"
    monkeypatch.setattr(factory, "cpu_has_fast_bf16", lambda: True)
    assert factory.resolve_precision("auto", "torch", "cpu") == "bf16"
    assert factory.resolve_precision("auto", "torch", "cuda") == "bf16"
    assert factory.resolve_precision("fp32", "torch", "cuda") == "fp32"
