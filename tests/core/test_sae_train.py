"""SAE trainer: sparse kernels vs autograd, data stream, determinism, cancel/resume, sweeps."""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medsae_desktop.core.cache import write_cache  # noqa: E402
from medsae_desktop.core.errors import MedsaeError, UsageError  # noqa: E402
from medsae_desktop.core.progress import run_job  # noqa: E402
from medsae_desktop.core.sae import load_sae  # noqa: E402
from medsae_desktop.core.sae.config import TrainConfig, resolve  # noqa: E402
from medsae_desktop.core.sae.data import (  # noqa: E402
    BLOCK_ROWS, BatchStream, prepare_split, read_rows)
from medsae_desktop.core.sae.model import ArchSpec, TrainableSAE, _kth_largest  # noqa: E402
from medsae_desktop.core.sae.synthetic import make_dictionary_data  # noqa: E402
from medsae_desktop.core.sae.train import sweep_job, train_job  # noqa: E402

D = 16


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    x, _ = make_dictionary_data(2600, D, 48, 3, seed=3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("c") / "c.h5"
    write_cache(path, x, ids=[f"img-{i}" for i in range(len(x))], dtype="float16",
                encoder={"key": "demo", "weights_sha256": "x"})
    return path


def _cfg(**kw):
    base = dict(expansion=4, batch_size=128, steps=30, checkpoint_every=10, log_every=5,
                lr=1e-3, buffer_rows=BLOCK_ROWS)
    base.update(kw)
    return TrainConfig(**base)


# ---- kernels -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk"])
def test_sparse_backward_matches_autograd(arch):
    torch.manual_seed(0)
    spec = ArchSpec(arch=arch, d_in=16, d_sae=128, k=6 if arch != "relu" else None,
                    l1=0.7 if arch == "relu" else None, k_aux=8)
    model = TrainableSAE(spec, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_enc_s.normal_().sub_(1.5 if arch == "relu" else 0)
        model.b_dec_d.normal_()
    x = torch.randn(48, 16)
    dead = torch.zeros(128, dtype=torch.bool)
    dead[::5] = True  # exercises AuxK for the TopK family
    loss, ref_stats = model.dense_loss(x, dead)
    loss.backward()
    model.remove_parallel_grad()  # the sparse path returns the projected decoder gradient
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    stats = model.sparse_grads(x, dead, max_density=1.0)
    assert stats is not None
    assert stats.loss == pytest.approx(ref_stats.loss, rel=1e-5)
    assert stats.l0 == pytest.approx(ref_stats.l0)
    assert torch.equal(stats.fired_s, ref_stats.fired_s)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-5, msg=name)


def test_sparse_path_declines_dense_batches():
    spec = ArchSpec(arch="relu", d_in=8, d_sae=32, l1=0.1)
    model = TrainableSAE(spec, torch.Generator().manual_seed(0))
    assert model.sparse_grads(torch.randn(16, 8), None) is None  # ~50 % active at init
    assert all(p.grad is None for p in model.parameters())


def test_kth_largest_exact():
    g = torch.Generator().manual_seed(1)
    for n, k in [(1 << 16, 700), (1000, 1), (999, 999), (5000, 4999)]:
        x = torch.randn(n, generator=g)
        assert _kth_largest(x, k) == float(x.kthvalue(n - k + 1).values)


# ---- data ----------------------------------------------------------------------------------
def test_split_by_id_and_normalisation(cache):
    split = prepare_split(cache, 0.2)
    again = prepare_split(cache, 0.2)
    assert np.array_equal(split.val_mask_n, again.val_mask_n)
    assert 0.1 < split.val_mask_n.mean() < 0.3
    train = np.concatenate(list(read_rows(split, "train")))
    val = np.concatenate(list(read_rows(split, "val")))
    assert len(train) == split.n_train and len(val) == split.n_val
    # Fitted on training rows only: there the mean is 0 and E‖x̃‖² = d.
    np.testing.assert_allclose(train.mean(0), 0, atol=2e-3)
    assert (train ** 2).sum(1).mean() == pytest.approx(D, rel=1e-3)
    assert abs((val ** 2).sum(1).mean() - D) > 1e-6  # val rows did not enter the fit


def test_stream_visits_each_training_row_once_per_epoch(cache):
    split = prepare_split(cache, 0.2)
    x_all = np.concatenate(list(read_rows(split, "train")))
    key = {row.tobytes(): i for i, row in enumerate(x_all)}
    batch = 50
    per_epoch = split.n_train // batch
    with BatchStream(split, seed=5, batch_size=batch, steps_per_epoch=per_epoch, start_step=0,
                     total_steps=2 * per_epoch, buffer_rows=BLOCK_ROWS) as stream:
        got = [(s, e, x) for s, e, x in stream]
    assert [s for s, _, _ in got] == list(range(2 * per_epoch))
    for epoch in (0, 1):
        seen = [key[r.tobytes()] for s, e, x in got if e == epoch for r in x]
        assert len(seen) == len(set(seen)) == per_epoch * batch  # no repeats, no val rows
    first = [key[r.tobytes()] for r in got[0][2]]
    second = [key[r.tobytes()] for r in got[per_epoch][2]]
    assert first != second  # reshuffled every epoch
    # Starting mid-way yields exactly the same batches (what --resume relies on).
    with BatchStream(split, seed=5, batch_size=batch, steps_per_epoch=per_epoch,
                     start_step=per_epoch - 3, total_steps=per_epoch + 2,
                     buffer_rows=BLOCK_ROWS) as stream:
        tail = list(stream)
    for s, e, x in tail:
        np.testing.assert_array_equal(x, got[s][2])


def test_resolve_small_and_large_caches():
    tiny = resolve(TrainConfig(), d_in=512, n_train=190, n_val=10)
    assert tiny.batch_size == 190 and tiny.total_steps >= 1000 and tiny.d_sae == 8192
    mid = resolve(TrainConfig(arch="topk"), d_in=512, n_train=5000, n_val=250)
    assert mid.batch_size == 1024 and mid.total_steps == 1000 and mid.k == 64
    big = resolve(TrainConfig(), d_in=512, n_train=2_000_000, n_val=100_000)
    assert big.total_steps * big.batch_size <= 50_000_000 and big.total_steps > 20_000
    paper = resolve(TrainConfig(), d_in=512, n_train=223_414, n_val=0, input_scale=40.0)
    assert paper.total_steps == 200 * (223_414 // 1024)
    assert paper.l1 == 3e-2 and paper.l1_effective == pytest.approx(1.2)
    with pytest.raises(UsageError):
        resolve(TrainConfig(arch="relu", k=5), d_in=8, n_train=10, n_val=0)


# ---- training ------------------------------------------------------------------------------
def _train(cache, out, cfg, resume=False):
    return run_job(train_job(cache, out, cfg, resume=resume))


@pytest.mark.parametrize("arch, kw", [
    ("relu", {"l1": 0.02, "kernels": "sparse"}), ("relu", {"resample_every": 8}),
    ("topk", {"k": 4}), ("batchtopk", {"k": 4}), ("jumprelu", {}),
    ("matryoshka", {"k": 4}),
])
def test_cancel_then_resume_equals_uninterrupted(cache, tmp_path, arch, kw):
    cfg = _cfg(arch=arch, **kw)
    full = _train(cache, tmp_path / "full", cfg)
    assert full.complete and full.steps == 30
    job = train_job(cache, tmp_path / "cut", cfg)
    for p in job:
        if p.done == 17:  # not a checkpoint step: close() must save one itself
            job.close()
            break
    cut_cfg = json.loads((tmp_path / "cut" / "cfg.json").read_text())
    assert cut_cfg["complete"] is False and cut_cfg["train"]["steps_done"] == 17
    resumed = _train(cache, tmp_path / "cut", cfg, resume=True)
    assert resumed.complete
    a, b = load_sae(tmp_path / "full"), load_sae(tmp_path / "cut")
    assert a.sae_id == b.sae_id, "resumed run differs from the uninterrupted one"
    assert a.cfg["metrics"]["fvu"] == b.cfg["metrics"]["fvu"]
    log = [json.loads(x) for x in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no duplicated log lines
    norms = np.linalg.norm(a.W_dec_sd, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)  # decoder rows stay unit-norm
    assert not (tmp_path / "full" / "resume").exists()


def test_same_seed_same_sae_other_seed_differs(cache, tmp_path):
    cfg = _cfg(arch="topk", k=4, steps=12)
    _train(cache, tmp_path / "a", cfg)
    _train(cache, tmp_path / "b", cfg)
    _train(cache, tmp_path / "c", dataclasses.replace(cfg, seed=1))
    ids = [load_sae(tmp_path / n).sae_id for n in "abc"]
    assert ids[0] == ids[1] != ids[2]


def test_checkpoint_contents_and_metrics(cache, tmp_path):
    res = _train(cache, tmp_path / "s", _cfg(arch="batchtopk", k=4))
    sae = load_sae(tmp_path / "s")
    cfg = sae.cfg
    assert cfg["complete"] and cfg["encoder"]["key"] == "demo"
    assert cfg["train"]["arch"] == "batchtopk" and cfg["train"]["resolved"]["d_sae"] == 4 * D
    m = res.metrics[0]
    assert set(m) >= {"mse", "fvu", "l0", "dead_frac", "dense_frac", "time_s", "samples_per_s"}
    assert m["eval_split"] == "val" and m == cfg["metrics"]
    assert sae.threshold_s is not None and float(sae.threshold_s.min()) > 0
    # The stored inference threshold keeps the average L0 near k on training data.
    split = prepare_split(cache, 0.05)
    x = split.input_mean_d + np.concatenate(list(read_rows(split, "train"))) / split.input_scale
    l0 = (sae.encode(x) > 0).sum(1).mean()
    assert 4 * 0.5 < l0 < 4 * 2, l0
    single = np.stack([sae.encode(x[i:i + 1])[0] for i in range(20)])
    np.testing.assert_array_equal(single > 0, sae.encode(x[:20]) > 0)


def test_sweep_equals_separate_runs(cache, tmp_path):
    cfgs = [_cfg(arch="topk", k=k, steps=12) for k in (3, 6)]
    res = run_job(sweep_job(cache, tmp_path / "grid", cfgs, names=["k3", "k6"]))
    assert [d.name for d in res.sae_dirs] == ["k3", "k6"]
    _train(cache, tmp_path / "solo6", cfgs[1])
    assert load_sae(tmp_path / "grid" / "k6").sae_id == load_sae(tmp_path / "solo6").sae_id
    with pytest.raises(UsageError, match="share"):
        run_job(sweep_job(cache, tmp_path / "bad", [cfgs[0], dataclasses.replace(cfgs[1],
                                                                                  seed=9)]))


def test_refuses_to_overwrite_and_rejects_changed_resume(cache, tmp_path):
    cfg = _cfg(arch="topk", k=4, steps=12)
    _train(cache, tmp_path / "s", cfg)
    with pytest.raises(UsageError, match="already holds"):
        _train(cache, tmp_path / "s", cfg)
    with pytest.raises(MedsaeError, match="already complete"):
        _train(cache, tmp_path / "s", cfg, resume=True)
    job = train_job(cache, tmp_path / "t", cfg)
    for p in job:
        if p.done == 5:
            job.close()
            break
    with pytest.raises(UsageError, match="settings"):
        _train(cache, tmp_path / "t", dataclasses.replace(cfg, lr=0.5), resume=True)


def test_bf16_autocast_path_runs_and_matches_fp32(cache, tmp_path):
    # CUDA uses this path (no GPU in CI): the dense autograd step under bf16 autocast.
    cfg = _cfg(arch="topk", k=4, steps=40)
    fp32 = _train(cache, tmp_path / "fp32", cfg).metrics[0]
    bf16 = _train(cache, tmp_path / "bf16", dataclasses.replace(cfg, precision="bf16")).metrics[0]
    assert bf16["fvu"] == pytest.approx(fp32["fvu"], abs=0.05)


def test_cuda_request_without_cuda_is_a_usage_error(cache, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(UsageError, match="CUDA"):
        _train(cache, tmp_path / "g", _cfg(device="cuda"))
