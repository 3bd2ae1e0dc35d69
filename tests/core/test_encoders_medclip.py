"""MedCLIP vision towers: reference parity, state-dict layout, official checkpoint loading.

All weights are random in the official layout (no real MedCLIP weights exist here).
"""

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from medsae_desktop.core.encoders import make_encoder, preprocess_renders  # noqa: E402
from medsae_desktop.core.encoders.checkpoint import sha256_file  # noqa: E402
from medsae_desktop.core.encoders.resnet import MedCLIPResNet, ResNet50  # noqa: E402
from medsae_desktop.core.errors import MedsaeError  # noqa: E402


def random_resnet_state(seed: int = 0) -> dict:
    """Random MedCLIP ResNet weights with sane scales and non-trivial BN statistics."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in ResNet50().state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("running_mean", "bias")):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim == 1:  # BN weight
            sd[k] = 0.3 + 0.5 * torch.rand(v.shape, generator=g)
        else:
            fan_in = v[0].numel()
            sd[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
    return sd


def reference_medclip_resnet(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """torchvision resnet50 + MedCLIP fc + encode_image normalisation, in plain F ops."""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"],
                            sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)

    t = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    t = F.max_pool2d(t, 3, 2, 1)
    for layer, n_blocks in zip(range(1, 5), (3, 4, 6, 3)):
        for i in range(n_blocks):
            p = f"layer{layer}.{i}"
            stride = 2 if (layer > 1 and i == 0) else 1
            out = F.relu(bn(F.conv2d(t, sd[p + ".conv1.weight"]), p + ".bn1"))
            out = F.relu(bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=stride, padding=1),
                            p + ".bn2"))
            out = bn(F.conv2d(out, sd[p + ".conv3.weight"]), p + ".bn3")
            if i == 0:
                t = bn(F.conv2d(t, sd[p + ".downsample.0.weight"], stride=stride),
                       p + ".downsample.1")
            t = F.relu(out + t)
    e = F.linear(F.adaptive_avg_pool2d(t, 1).flatten(1), sd["fc.weight"])
    return e / e.norm(dim=-1, keepdim=True), e


def chest_like(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = 0.2 + 0.6 * ((yy - 0.5) ** 2 * 3 + (xx - 0.3) ** 2 * 8 < 0.25)
    img += 0.6 * ((yy - 0.5) ** 2 * 3 + (xx - 0.7) ** 2 * 8 < 0.25) * rng.random()
    img += 0.05 * rng.standard_normal((h, w))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


# ---- fixtures: fake official checkpoints ----------------------------------------------------
TEXT_KEYS = {  # a few text-tower keys of the full MedCLIPModel state dict (must be ignored)
    "text_model.model.embeddings.word_embeddings.weight": (64, 8),
    "text_model.model.embeddings.position_ids": (1, 512),
    "text_model.model.encoder.layer.0.attention.self.query.weight": (8, 8),
    "text_model.projection_head.weight": (512, 768),
}


def official_layout(vision_sd: dict, extra_vision: dict | None = None) -> dict:
    sd = {"vision_model." + k: v for k, v in vision_sd.items()}
    sd.update({"vision_model." + k: v for k, v in (extra_vision or {}).items()})
    for k, shape in TEXT_KEYS.items():
        sd[k] = (torch.arange(shape[1]).expand(shape).clone() if k.endswith("position_ids")
                 else torch.randn(shape))
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return sd


@pytest.fixture(scope="module")
def resnet_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("medclip-resnet")
    vision = {"model." + k: v for k, v in random_resnet_state(1).items()}
    torch.save(official_layout(vision), d / "pytorch_model.bin")
    return d, vision


@pytest.fixture(scope="module")
def swin_ckpt(tmp_path_factory):
    from medsae_desktop.core.encoders.swin import MedCLIPSwin

    torch.manual_seed(3)
    m = MedCLIPSwin()
    vision = {k: v.clone() for k, v in m.state_dict().items()}
    # transformers 4.24 saved these persistent buffers; the loader must drop them.
    rel = {k.replace("relative_position_bias_table", "relative_position_index"):
           torch.zeros(49, 49, dtype=torch.long)
           for k in vision if k.endswith("relative_position_bias_table")}
    assert len(rel) == 12, "Swin-T has 12 blocks"
    d = tmp_path_factory.mktemp("medclip-vit")
    torch.save(official_layout(vision, rel), d / "pytorch_model.bin")
    return d, vision, m


# ---- ResNet ---------------------------------------------------------------------------------
def test_resnet_matches_independent_reference(rng):
    sd = random_resnet_state(0)
    model = MedCLIPResNet().eval()
    model.model.load_state_dict(sd, strict=True)
    renders = [chest_like(rng, 320, 260), chest_like(rng, 200, 500)]
    x = torch.from_numpy(preprocess_renders(renders))
    with torch.inference_mode():
        ref, ref_raw = reference_medclip_resnet(sd, x)
        e, cells = model(x)
        official = model.model(x)  # torchvision-style forward: fc(avgpool(layer4))
    ours = e / e.norm(dim=-1, keepdim=True)
    cos = F.cosine_similarity(ours, ref, dim=-1)
    assert cos.min().item() >= 0.99999, cos
    # Random-weight embeddings of different images are close in angle (cosine ~0.997), so
    # also compare the raw vectors: a layout error (e.g. stride on the wrong conv) moves
    # them by far more than float rounding.
    rel_err = ((e - ref_raw).norm(dim=-1) / ref_raw.norm(dim=-1)).max().item()
    assert rel_err < 1e-4, rel_err
    assert torch.allclose(e, official, atol=1e-5, rtol=1e-5)
    # Not collapsed to one image: the two images must give different embeddings.
    assert F.cosine_similarity(ref[0], ref[1], dim=0).item() < 0.9999


def test_resnet_keys_are_torchvision_names():
    keys = list(MedCLIPResNet().state_dict())
    assert len(keys) == 319  # torchvision resnet50 (320) minus fc.bias
    assert "model.fc.weight" in keys and "model.fc.bias" not in keys
    assert "model.layer1.0.downsample.1.running_var" in keys
    assert "model.layer4.2.bn3.num_batches_tracked" in keys
    pat = re.compile(r"model\.(conv1|bn1|fc|layer[1-4]\.\d\.(conv[1-3]|bn[1-3]|downsample\.[01]))"
                     r"\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
    assert all(pat.match(k) for k in keys), [k for k in keys if not pat.match(k)][:5]
    assert tuple(MedCLIPResNet().state_dict()["model.fc.weight"].shape) == (512, 2048)


def test_resnet_state_dict_round_trip(tmp_path):
    a = MedCLIPResNet().eval()
    a.model.load_state_dict(random_resnet_state(2))
    torch.save(a.state_dict(), tmp_path / "sd.pt")
    b = MedCLIPResNet().eval()
    b.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(a(x)[0], b(x)[0])


@pytest.mark.parametrize("variant", ["resnet", "swin"])
def test_per_location_embeddings_average_to_global(variant, resnet_ckpt, swin_ckpt, rng):
    d = resnet_ckpt[0] if variant == "resnet" else swin_ckpt[0]
    enc = make_encoder(f"medclip-{variant}", weights_dir=d)
    res = enc.encode_renders([chest_like(rng, 300, 240), chest_like(rng, 256, 256)],
                             patches=True)
    assert res.patches_bpd.shape == (2, 49, 512) and res.patches_bpd.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(res.embeddings_bd, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(res.patches_bpd.mean(axis=1), res.embeddings_bd, atol=2e-7,
                               rtol=0)


# ---- official checkpoint loading -------------------------------------------------------------
def test_load_fake_official_resnet(resnet_ckpt, rng):
    d, vision = resnet_ckpt
    enc = make_encoder("medclip-resnet", weights_dir=d)
    info = enc.info
    assert (info.key, info.variant, info.backend) == ("medclip-resnet", "resnet50", "torch")
    assert info.weights_sha256 == sha256_file(d / "pytorch_model.bin")
    ref_model = MedCLIPResNet().eval()
    ref_model.load_state_dict(vision, strict=True)
    renders = [chest_like(rng, 280, 300)]
    x = torch.from_numpy(preprocess_renders(renders))
    with torch.inference_mode():
        e = ref_model(x)[0]
    np.testing.assert_allclose(enc.encode_renders(renders).embeddings_bd,
                               (e / e.norm(dim=-1, keepdim=True)).numpy(), atol=1e-5)


def test_load_fake_official_swin(swin_ckpt, rng):
    d, _, m = swin_ckpt
    enc = make_encoder("medclip-swin", weights_dir=d)
    assert (enc.info.key, enc.info.variant) == ("medclip-swin", "swin-tiny")
    renders = [chest_like(rng, 300, 300)]
    x = torch.from_numpy(preprocess_renders(renders))
    with torch.inference_mode():
        e = m.eval()(x)[0]
    np.testing.assert_allclose(enc.encode_renders(renders).embeddings_bd,
                               (e / e.norm(dim=-1, keepdim=True)).numpy(), atol=1e-5)


def test_safetensors_and_module_prefix_are_accepted(resnet_ckpt, tmp_path):
    from safetensors.torch import save_file

    _, vision = resnet_ckpt
    save_file({"module.vision_model." + k: v.contiguous() for k, v in vision.items()},
              str(tmp_path / "model.safetensors"))
    enc = make_encoder("medclip-resnet", weights_dir=tmp_path)
    assert enc.info.weights_sha256 == sha256_file(tmp_path / "model.safetensors")


def test_partial_checkpoint_names_missing_keys(resnet_ckpt, tmp_path):
    _, vision = resnet_ckpt
    partial = {k: v for k, v in vision.items() if not k.startswith("model.layer4")}
    partial["model.extra.weight"] = torch.zeros(3)
    torch.save(official_layout(partial), tmp_path / "pytorch_model.bin")
    with pytest.raises(MedsaeError) as ei:
        make_encoder("medclip-resnet", weights_dir=tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg and str(tmp_path / "pytorch_model.bin") in msg
    n_missing = sum(k.startswith("model.layer4") for k in vision)
    assert "missing keys: model.layer4.0.conv1.weight" in msg and f"({n_missing} in all)" in msg
    assert "unexpected keys: model.extra.weight (1)" in msg


def test_shape_mismatch_is_reported(resnet_ckpt, tmp_path):
    _, vision = resnet_ckpt
    bad = dict(vision)
    bad["model.fc.weight"] = torch.zeros(256, 2048)
    torch.save(official_layout(bad), tmp_path / "pytorch_model.bin")
    with pytest.raises(MedsaeError, match=r"shape mismatches: model.fc.weight \(256, 2048\)"):
        make_encoder("medclip-resnet", weights_dir=tmp_path)


def test_wrong_variant_and_non_checkpoints(resnet_ckpt, tmp_path):
    with pytest.raises(MedsaeError, match="holds a resnet50 vision tower, not swin-tiny"):
        make_encoder("medclip-swin", weights_dir=resnet_ckpt[0])
    with pytest.raises(MedsaeError, match="no model.safetensors or pytorch_model.bin"):
        make_encoder("medclip-resnet", weights_dir=tmp_path)
    with pytest.raises(MedsaeError, match="not found"):
        make_encoder("medclip-resnet", weights_dir=tmp_path / "nope")
    with pytest.raises(MedsaeError, match="needs --weights"):
        make_encoder("medclip-resnet")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(MedsaeError, match="cannot read checkpoint"):
        make_encoder("medclip-resnet", weights_dir=tmp_path)
    torch.save({"text_model.projection_head.weight": torch.zeros(2, 2)},
               tmp_path / "pytorch_model.bin")
    with pytest.raises(MedsaeError, match="not a MedCLIP vision checkpoint"):
        make_encoder("medclip-resnet", weights_dir=tmp_path)


def test_pickled_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"vision_model.model.conv1.weight": Evil()}, f)
    with pytest.raises(MedsaeError, match="cannot read checkpoint"):
        make_encoder("medclip-resnet", weights_dir=tmp_path)
