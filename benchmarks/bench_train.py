"""SAE training throughput: medsae-desktop vs the paper's own training code, side by side.

Peer: saprmarks/dictionary_learning ``StandardTrainer`` (the MedSAE paper's training code path)
and, for TopK, the same library's ``TopKTrainer``. Get it into a throwaway folder (never
committed, never a dependency)::

    pip download dictionary-learning --no-deps -d /tmp/dl
    cd /tmp/dl && unzip -o -q dictionary_learning-*.whl -d x
    pip install --target /tmp/dl/deps einops        # its only import we need

    python benchmarks/bench_train.py --peer-dir /tmp/dl/x --deps-dir /tmp/dl/deps

Only ``trainers/{trainer,standard,top_k}.py``, ``dictionary.py`` and ``config.py`` are loaded
(package ``__init__`` files are bypassed: they import nnsight/wandb).

Setting: d_in 512, d_sae 8192, batch 1024, fp32, this machine's CPU threads. Trainers run
interleaved in rounds on the same batches, so machine load affects all of them alike; the
speed-up is the median over rounds of (ours / peer) within a round. Our ReLU SAE is timed at a
trained sparsity (it is warm-started to the default λ's steady state first: its fast path needs
sparse activations), and its dense early phase is timed too. ``--memory`` also trains from a
2M × 512 float16 cache and reports the peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `medsae train`; applies to all trainers

import numpy as np  # noqa: E402
import torch  # noqa: E402

B, D_IN, D_SAE, K = 1024, 512, 8192, 64


# ---- peer ----------------------------------------------------------------------------------
def load_peer(peer_dir: Path, deps_dir: Path | None) -> types.SimpleNamespace:
    """Import dictionary_learning's trainers without running its package __init__."""
    if deps_dir is not None:
        sys.path.insert(0, str(deps_dir))
    root = peer_dir / "dictionary_learning"
    if not (root / "trainers" / "standard.py").is_file():
        raise SystemExit(f"dictionary_learning not found under {peer_dir} (see module docstring)")
    for name, path in (("dictionary_learning", root), ("dictionary_learning.trainers",
                                                       root / "trainers")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    import importlib

    std = importlib.import_module("dictionary_learning.trainers.standard")
    topk = importlib.import_module("dictionary_learning.trainers.top_k")
    return types.SimpleNamespace(StandardTrainer=std.StandardTrainer,
                                 TopKTrainer=topk.TopKTrainer)


class PeerRelu:
    def __init__(self, peer, l1: float) -> None:
        self.t = peer.StandardTrainer(
            steps=10**7, activation_dim=D_IN, dict_size=D_SAE, layer=0, lm_name="bench",
            lr=3e-4, l1_penalty=l1, warmup_steps=0, sparsity_warmup_steps=None, seed=0,
            device="cpu")
        self.i = 0

    def step(self, x: torch.Tensor) -> float | None:
        self.t.update(self.i, x)
        self.i += 1
        return None


class PeerTopK:
    def __init__(self, peer) -> None:
        self.t = peer.TopKTrainer(steps=10**7, activation_dim=D_IN, dict_size=D_SAE, k=K,
                                  layer=0, lm_name="bench", lr=3e-4, warmup_steps=0, seed=0,
                                  device="cpu")
        self.i = 0

    def step(self, x: torch.Tensor) -> float | None:
        self.t.update(self.i, x)
        self.i += 1
        return None


# ---- ours ----------------------------------------------------------------------------------
class Ours:
    """Our real per-step code path (medsae_desktop.core.sae.train._Run.train_step)."""

    def __init__(self, arch: str, scale: float, kernels: str = "auto", lr: float = 3e-4):
        from medsae_desktop.core.sae.config import TrainConfig, resolve
        from medsae_desktop.core.sae.data import CacheSplit
        from medsae_desktop.core.sae.train import _Run

        cfg = TrainConfig(arch=arch, k=K if arch != "relu" else None, lr=lr, kernels=kernels,
                          batch_size=B)
        split = CacheSplit(path=Path("bench"), n_rows=10**6, d_in=D_IN,
                           val_mask_n=np.zeros(0, bool), input_mean_d=np.zeros(D_IN, np.float32),
                           input_scale=scale, encoder={}, fingerprint="bench")
        plan = resolve(cfg, d_in=D_IN, n_train=10**6, n_val=0, input_scale=scale)
        self.run = _Run(arch, Path("bench"), cfg, plan, split, torch.device("cpu"))

    def step(self, x: torch.Tensor) -> float:
        return self.run.train_step(x).l0

    def set_lr(self, lr: float) -> None:
        for g in self.run.opt.param_groups:
            g["lr"] = lr


# ---- measurements ----------------------------------------------------------------------------
def matmul_rate(dtype: torch.dtype, reps: int = 6) -> float:
    a = torch.randn(B, D_IN, dtype=dtype)
    w = torch.randn(D_SAE, D_IN, dtype=dtype)
    a @ w.t()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ w.t()
        best = min(best, time.perf_counter() - t0)
    return 2 * B * D_IN * D_SAE / best


def make_batches(n_batches: int, seed: int = 0) -> tuple[list[torch.Tensor], float]:
    """MedCLIP-like inputs: unit-norm 512-d sparse-dictionary vectors, normalised as we train."""
    from medsae_desktop.core.sae.synthetic import make_dictionary_data

    x, _ = make_dictionary_data(n_batches * B, D_IN, 4096, 24, noise=0.02, seed=seed)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mu = x.mean(0)
    scale = float(np.sqrt(D_IN / ((x - mu) ** 2).sum(1).mean()))
    xt = ((x - mu) * scale).astype(np.float32)
    return [torch.from_numpy(xt[i * B:(i + 1) * B].copy()) for i in range(n_batches)], scale


def time_steps(trainer, batches: list[torch.Tensor], start: int, n: int) -> tuple[float, float]:
    l0 = float("nan")
    t0 = time.perf_counter()
    for i in range(n):
        out = trainer.step(batches[(start + i) % len(batches)])
        if out is not None:
            l0 = out
    return n * B / (time.perf_counter() - t0), l0


def memory_run(tmp: Path, n_rows: int, steps: int) -> tuple[float, float]:
    """Write an n_rows × 512 float16 cache and train from it in a child; peak RSS in GB."""
    import h5py

    from medsae_desktop.core.cache import _append_rows, _create_layout

    cache = tmp / "big.h5"
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with h5py.File(cache, "w") as f:
        _create_layout(f, embedding_dim=D_IN, encoder={"key": "bench"}, dtype="float16",
                       label_names=None, patch_shape=None)
        for lo in range(0, n_rows, 65_536):
            hi = min(n_rows, lo + 65_536)
            x = rng.standard_normal((hi - lo, D_IN)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            _append_rows(f, [f"r{i}" for i in range(lo, hi)], [""] * (hi - lo), x, None, None)
    t_write = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "medsae_desktop", "train", str(cache), "-o", str(tmp / "sae"),
           "--steps", str(steps), "--arch", "topk", "--k", str(K), "--val-fraction", "0.005"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    del before
    return peak_kb / 1024**2, t_write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-dir", type=Path, default=Path("/tmp/dl/x"))
    ap.add_argument("--deps-dir", type=Path, default=Path("/tmp/dl/deps"))
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=1, help="steps per trainer per round")
    ap.add_argument("--warmup", type=int, default=400, help="max warm-start steps, our relu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--memory", action="store_true", help="also the 2M-row cache memory test")
    ap.add_argument("--memory-rows", type=int, default=2_000_000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peer = load_peer(args.peer_dir, args.deps_dir)

    f32 = matmul_rate(torch.float32)
    bf16 = matmul_rate(torch.bfloat16, reps=2)
    step_flop = 5 * 2 * B * D_IN * D_SAE
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print(f"matmul 1024x512x8192: fp32 {f32 / 1e9:.1f} GFLOP/s, bf16 {bf16 / 1e9:.2f} GFLOP/s;"
          f" dense floor (5 matmuls/step): fp32 {B / (step_flop / f32):.0f} samples/s, "
          f"bf16 {B / (step_flop / bf16):.0f} samples/s")

    batches, scale = make_batches(24)
    from medsae_desktop.core.sae.config import DEFAULT_L1

    l1_eff = DEFAULT_L1 * scale
    trainers = {
        "peer relu (StandardTrainer)": PeerRelu(peer, l1_eff),
        "peer topk (TopKTrainer)": PeerTopK(peer),
        "ours relu (dense phase)": Ours("relu", scale, kernels="dense"),
        "ours relu (trained sparsity)": Ours("relu", scale),
        "ours topk": Ours("topk", scale),
    }
    # Warm-start our relu to a trained sparsity (3 % active): a high lr gets there in tens of
    # steps instead of hours; then 20 settling steps at the paper's lr. Its time per step
    # depends on that sparsity only (the peer's does not depend on it at all).
    warm = trainers["ours relu (trained sparsity)"]
    warm.set_lr(3e-3)
    t0 = time.perf_counter()
    l0 = float("nan")
    for i in range(args.warmup):
        l0 = warm.step(batches[i % len(batches)])
        if l0 < 0.03 * D_SAE:
            break
    warm.set_lr(3e-4)
    for j in range(20):
        l0 = warm.step(batches[(i + j) % len(batches)])
    print(f"warm start of our relu: {i + 21} steps, {time.perf_counter() - t0:.0f} s, "
          f"L0 {l0:.0f}")
    for t in trainers.values():  # first steps (allocation, geometric median) are not timed
        time_steps(t, batches, 0, 1)

    # Round-robin, one short burst per trainer per round: load changes hit every trainer alike.
    rates: dict[str, list[float]] = {n: [] for n in trainers}
    busy: dict[str, float] = {n: 0.0 for n in trainers}
    l0s: dict[str, float] = {}
    for r in range(args.rounds):
        for name, t in trainers.items():
            sps, l0 = time_steps(t, batches, r * args.steps, args.steps)
            rates[name].append(sps)
            busy[name] += args.steps * B / sps
            l0s[name] = l0
        print(f"round {r + 1}/{args.rounds}, load {os.getloadavg()[0]:.1f}: "
              + ", ".join(f"{rates[n][-1]:.0f}" for n in trainers), flush=True)

    peer = "peer relu (StandardTrainer)"
    total = args.rounds * args.steps * B
    print()
    print("| trainer | samples/s (all rounds) | × peer relu (all rounds) | × peer relu "
          "(median of per-round ratios) | L0 |")
    print("|---|---:|---:|---:|---:|")
    for name in trainers:
        ratio_rounds = [a / b for a, b in zip(rates[name], rates[peer])]
        l0 = l0s.get(name, float("nan"))
        print(f"| {name} | {total / busy[name]:.0f} | {busy[peer] / busy[name]:.2f} | "
              f"{statistics.median(ratio_rounds):.2f} | "
              f"{'-' if l0 != l0 else f'{l0:.0f}'} |")
    ptk = "peer topk (TopKTrainer)"
    print(f"\nours topk vs peer TopKTrainer (all rounds): x{busy[ptk] / busy['ours topk']:.2f}")
    if args.memory:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as td:
            peak, t_write = memory_run(Path(td), args.memory_rows, steps=30)
        print(f"memory: training (topk) from a {args.memory_rows} x 512 float16 cache: "
              f"peak RSS {peak:.2f} GB (cache written in {t_write:.0f} s)")


if __name__ == "__main__":
    main()
