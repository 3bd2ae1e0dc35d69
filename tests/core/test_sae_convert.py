"""Import of SAELens and dictionary_learning SAEs: same outputs as in the source library."""

import json

import numpy as np
import pytest

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.sae import load_sae
from medsae_desktop.core.sae.convert import import_dictionary_learning, import_sae, \
    import_saelens

D_IN, D_SAE = 8, 24


def _w(rng):
    return (rng.standard_normal((D_IN, D_SAE)).astype(np.float32),
            rng.standard_normal(D_SAE).astype(np.float32) * 0.3,
            rng.standard_normal((D_SAE, D_IN)).astype(np.float32),
            rng.standard_normal(D_IN).astype(np.float32))


def _saelens_dir(tmp_path, rng, arch, apply_b_dec):
    from safetensors.numpy import save_file

    W_enc, b_enc, W_dec, b_dec = _w(rng)
    t = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    cfg = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE,
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "model_name": "tiny", "hook_name": "blocks.0"}
    if arch == "topk":
        cfg["activation_fn_kwargs"] = {"k": 5}
    if arch == "jumprelu":
        t["threshold"] = np.abs(rng.standard_normal(D_SAE)).astype(np.float32)
    src = tmp_path / f"saelens-{arch}"
    src.mkdir()
    save_file(t, str(src / "sae_weights.safetensors"))
    (src / "cfg.json").write_text(json.dumps(cfg))
    return src, t


def _saelens_forward(t, x, arch, apply_b_dec):
    """SAELens' own formulas (StandardSAE / TopKSAE / JumpReLUSAE encode + decode)."""
    pre = (x - t["b_dec"] * apply_b_dec) @ t["W_enc"] + t["b_enc"]
    if arch == "standard":
        f = np.maximum(pre, 0)
    elif arch == "topk":
        f = np.zeros_like(pre)
        idx = np.argsort(-pre, axis=1)[:, :5]
        np.put_along_axis(f, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
    else:
        f = np.maximum(pre, 0) * (pre > t["threshold"])
    return f, f @ t["W_dec"] + t["b_dec"]


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_import_same_outputs(tmp_path, rng, arch, apply_b_dec):
    src, t = _saelens_dir(tmp_path, rng, arch, apply_b_dec)
    sae = load_sae(import_sae(src, tmp_path / "ours"))
    x = rng.standard_normal((11, D_IN)).astype(np.float32)
    f, x_hat = _saelens_forward(t, x, arch, apply_b_dec)
    np.testing.assert_allclose(sae.encode(x), f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sae.reconstruct(x), x_hat, rtol=1e-4, atol=1e-4)
    assert sae.cfg["imported_from"]["format"] == "saelens"


def test_saelens_unsupported_and_broken(tmp_path, rng):
    src, _ = _saelens_dir(tmp_path, rng, "standard", True)
    cfg = json.loads((src / "cfg.json").read_text())
    (src / "cfg.json").write_text(json.dumps(dict(cfg, architecture="gated")))
    with pytest.raises(MedsaeError, match="not supported"):
        import_saelens(src, tmp_path / "o")
    (src / "sae_weights.safetensors").write_bytes(b"junk")
    with pytest.raises(MedsaeError):
        import_saelens(src, tmp_path / "o")
    with pytest.raises(MedsaeError, match="not a SAELens"):
        import_sae(tmp_path, tmp_path / "o")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_dictionary_learning_import(tmp_path, rng, monkeypatch):
    torch = pytest.importorskip("torch")
    W_enc, b_enc, W_dec, b_dec = _w(rng)
    T = torch.from_numpy
    x = rng.standard_normal((9, D_IN)).astype(np.float32)

    # AutoEncoder (the paper's "Standard"): f = relu(enc(x − bias)), x̂ = dec(f) + bias.
    torch.save({"bias": T(b_dec), "encoder.weight": T(W_enc.T.copy()), "encoder.bias": T(b_enc),
                "decoder.weight": T(W_dec.T.copy())}, tmp_path / "std.pt")
    sae = load_sae(import_dictionary_learning(tmp_path / "std.pt", tmp_path / "std"))
    f = np.maximum((x - b_dec) @ W_enc + b_enc, 0)
    np.testing.assert_allclose(sae.encode(x), f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sae.reconstruct(x), f @ W_dec + b_dec, rtol=1e-4, atol=1e-4)

    # BatchTopKSAE: inference uses its scalar threshold → stored per latent.
    d = tmp_path / "btk"
    d.mkdir()
    torch.save({"encoder.weight": T(W_enc.T.copy()), "encoder.bias": T(b_enc),
                "decoder.weight": T(W_dec.T.copy()), "b_dec": T(b_dec),
                "k": torch.tensor(4, dtype=torch.int), "threshold": torch.tensor(0.7)},
               d / "ae.pt")
    (d / "config.json").write_text(json.dumps({"trainer": {"dict_class": "BatchTopKSAE"}}))
    sae = load_sae(import_sae(d, tmp_path / "btk_ours"))
    post = np.maximum((x - b_dec) @ W_enc + b_enc, 0)
    assert sae.arch == "batchtopk" and sae.k == 4
    np.testing.assert_allclose(sae.encode(x), post * (post > 0.7), rtol=1e-4, atol=1e-4)

    # JumpReluAutoEncoder: pre = x·W_enc + b_enc (b_dec not subtracted) — folded on import.
    thr = np.abs(rng.standard_normal(D_SAE)).astype(np.float32)
    torch.save({"W_enc": T(W_enc), "b_enc": T(b_enc), "W_dec": T(W_dec), "b_dec": T(b_dec),
                "threshold": T(thr)}, tmp_path / "jr.pt")
    sae = load_sae(import_dictionary_learning(tmp_path / "jr.pt", tmp_path / "jr"))
    pre = x @ W_enc + b_enc
    np.testing.assert_allclose(sae.encode(x), np.maximum(pre * (pre > thr), 0), rtol=1e-4,
                               atol=1e-4)

    # Pickled code is refused (weights_only=True), never executed.
    monkeypatch.chdir(tmp_path)
    torch.save({"bias": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(MedsaeError, match="weights_only"):
        import_dictionary_learning(tmp_path / "evil.pt", tmp_path / "evil")
    assert not (tmp_path / "PWNED").exists()
