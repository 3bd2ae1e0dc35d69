"""Training configuration (frozen dataclass, saved as ``cfg.json["train"]``).

Defaults follow the paper's code (DESIGN.md §5.2, reference/paper.md §4.3): ReLU + L1,
expansion 16, batch 1024, lr 3e-4, Adam, constant LR, no sparsity warm-up. ``None`` fields are
resolved from the data by :func:`resolve` (e.g. epochs/steps for a small cache) and the resolved
config is what gets written beside the SAE.

No torch here: the CLI and the UI build configs without importing it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medsae_desktop.core.errors import UsageError
from medsae_desktop.core.sae.runtime import ARCHS

#: Paper code's default ReLU L1 grid (src/sweep_config.py, "Standard"): [1e-4, 3e-3, 1e-3, 3e-2].
PAPER_L1_GRID = (1e-4, 1e-3, 3e-3, 3e-2)
#: Default L1 for ``relu``: the strongest value of the paper code's grid. Like the paper code,
#: ``l1`` is expressed for *raw* embeddings: the paper code trained on un-normalised embeddings,
#: and ‖x − x̂‖² + λ‖f‖₁ on raw inputs has the same minimiser as ‖x̃ − x̂̃‖² + λ·s‖f̃‖₁ on
#: x̃ = s·(x − μ) (latents scale with s). So the loss we optimise uses λ_eff = λ·s
#: (``Plan.l1_effective``), which keeps the paper's grid meaningful after normalisation.
DEFAULT_L1 = 3e-2
#: Default L0 coefficient for ``jumprelu`` (loss = MSE + λ·L0, normalised space). Lightly
#: tuned on synthetic data (0.1 left ~10x the true L0); sweep it for real embeddings.
DEFAULT_JUMPRELU_L0 = 0.5
#: Default k for the TopK family (middle of the paper code's grid [32, 64, 128, 256]).
DEFAULT_K = 64
#: Default number of epochs (paper code: 200) and the bounds used to pick steps automatically.
DEFAULT_EPOCHS = 200
MIN_AUTO_STEPS = 1000
MAX_AUTO_SAMPLES = 50_000_000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and, with the cache, its exact result)."""

    arch: str = "relu"
    """Architecture: relu (paper), topk, batchtopk, jumprelu, matryoshka."""
    expansion: int = 16
    """d_sae = expansion · d_in (ignored when ``d_sae`` is set)."""
    d_sae: int | None = None
    """Dictionary size; None → expansion · d_in."""
    l1: float | None = None
    """Sparsity coefficient. relu: L1 in raw-embedding units as the paper code (default
    :data:`DEFAULT_L1`; the normalised loss uses l1·input_scale). jumprelu: L0 coefficient in
    the normalised loss (default :data:`DEFAULT_JUMPRELU_L0`)."""
    k: int | None = None
    """Active latents per sample for topk/batchtopk/matryoshka (default :data:`DEFAULT_K`)."""
    epochs: int | None = None
    """Passes over the training split; None → 200, adjusted to 1000..50M-sample bounds."""
    steps: int | None = None
    """Total optimiser steps; overrides ``epochs`` when set."""
    batch_size: int = 1024
    """Samples per step; clamped to the training-set size for tiny caches."""
    lr: float = 3e-4
    """Adam learning rate (constant, betas 0.9/0.999 as the paper code)."""
    seed: int = 0
    """Seeds initialisation, data order and resampling: same seed → same SAE on CPU."""
    val_fraction: float = 0.05
    """Fraction of *image ids* held out for validation (split by a hash of the id)."""
    auxk_alpha: float = 1 / 32
    """AuxK loss weight for the TopK family (dead-latent revival)."""
    k_aux: int | None = None
    """Latents used by AuxK; None → d_in // 2 (as dictionary_learning)."""
    dead_after_samples: int | None = None
    """A latent is 'dead' after this many samples without firing; None → min(10M, n_train)."""
    resample_every: int = 0
    """relu only: Anthropic-style resampling of dead latents every N steps (0 = off)."""
    jumprelu_bandwidth: float = 0.05
    """Straight-through kernel width for JumpReLU thresholds, in normalised units (per-dim
    variance 1; Gemma Scope's 1e-3 is for inputs ~√d times smaller)."""
    matryoshka_prefixes: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
    """Nested dictionary prefixes as fractions of d_sae (last must be 1)."""
    threshold_beta: float = 0.999
    """EMA factor of the BatchTopK/Matryoshka inference threshold."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1 ..."""
    precision: str = "auto"
    """fp32 | bf16 | auto (bf16 autocast on CUDA; fp32 on CPU where bf16 matmul may be slow)."""
    kernels: str = "auto"
    """auto | dense | sparse: sparse CPU kernels for relu/topk/batchtopk when activations are
    sparse; dense = plain autograd reference path."""
    checkpoint_every: int = 1000
    """Save a resumable checkpoint every N steps (and always at the end)."""
    log_every: int = 20
    """Yield progress and append to ``train_log.jsonl`` every N steps."""
    buffer_rows: int = 131_072
    """Rows per shuffle group held in memory (memory ≈ 3 · buffer_rows · d · 4 bytes)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["matryoshka_prefixes"] = list(self.matryoshka_prefixes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (typos must not pass)."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - names)
        if extra:
            raise UsageError(f"unknown training settings: {', '.join(extra)}")
        kw = dict(data)
        if "matryoshka_prefixes" in kw:
            kw["matryoshka_prefixes"] = tuple(float(v) for v in kw["matryoshka_prefixes"])
        return cls(**kw)


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`UsageError` for impossible settings (before any data is read)."""
    if cfg.arch not in ARCHS:
        raise UsageError(f"unknown --arch {cfg.arch!r} (choose from {', '.join(ARCHS)})")
    checks = [
        (cfg.expansion >= 1, "--expansion must be ≥ 1"),
        (cfg.d_sae is None or cfg.d_sae >= 1, "d_sae must be ≥ 1"),
        (cfg.l1 is None or cfg.l1 >= 0, "--l1 must be ≥ 0"),
        (cfg.k is None or cfg.k >= 1, "--k must be ≥ 1"),
        (cfg.epochs is None or cfg.epochs >= 1, "--epochs must be ≥ 1"),
        (cfg.steps is None or cfg.steps >= 1, "--steps must be ≥ 1"),
        (cfg.batch_size >= 1, "--batch-size must be ≥ 1"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), "--lr must be > 0"),
        (0 <= cfg.val_fraction < 1, "--val-fraction must be in [0, 1)"),
        (cfg.checkpoint_every >= 1, "--checkpoint-every must be ≥ 1"),
        (cfg.log_every >= 1, "log_every must be ≥ 1"),
        (cfg.resample_every >= 0, "--resample-every must be ≥ 0"),
        (cfg.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16"),
        (cfg.kernels in ("auto", "dense", "sparse"), "kernels must be auto, dense or sparse"),
        (cfg.buffer_rows >= 1, "buffer_rows must be ≥ 1"),
        (len(cfg.matryoshka_prefixes) >= 1 and abs(cfg.matryoshka_prefixes[-1] - 1.0) < 1e-9
         and all(0 < a < b for a, b in zip(cfg.matryoshka_prefixes, cfg.matryoshka_prefixes[1:]))
         and cfg.matryoshka_prefixes[0] > 0,
         "matryoshka prefixes must increase and end at 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    if cfg.k is not None and cfg.arch in ("relu", "jumprelu"):
        raise UsageError(f"--k applies to topk/batchtopk/matryoshka, not {cfg.arch}")
    if cfg.l1 is not None and cfg.arch in ("topk", "batchtopk", "matryoshka"):
        raise UsageError(f"--l1 applies to relu/jumprelu, not {cfg.arch} (use --k)")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Settings resolved against the data (written into ``cfg.json["train"]["resolved"]``)."""

    d_in: int
    d_sae: int
    k: int | None
    l1: float | None
    l1_effective: float | None
    k_aux: int
    batch_size: int
    n_train: int
    n_val: int
    steps_per_epoch: int
    total_steps: int
    dead_after_samples: int
    prefix_sizes: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["prefix_sizes"] = list(self.prefix_sizes)
        return out


def resolve(cfg: TrainConfig, *, d_in: int, n_train: int, n_val: int,
            input_scale: float = 1.0) -> Plan:
    """Fill the data-dependent defaults of ``cfg`` for a cache with these sizes.

    Epochs default to the paper's 200, then are raised so the run has at least
    :data:`MIN_AUTO_STEPS` steps (tiny caches) and lowered so it sees at most
    :data:`MAX_AUTO_SAMPLES` samples (huge caches). Batch size is clamped to ``n_train``.
    """
    validate(cfg)
    if n_train < 1:
        raise UsageError("no training rows (cache empty or --val-fraction too large)")
    d_sae = cfg.d_sae if cfg.d_sae is not None else cfg.expansion * d_in
    k = None
    if cfg.arch in ("topk", "batchtopk", "matryoshka"):
        k = min(cfg.k if cfg.k is not None else DEFAULT_K, d_sae)
    l1 = l1_eff = None
    if cfg.arch == "relu":
        l1 = DEFAULT_L1 if cfg.l1 is None else cfg.l1
        l1_eff = l1 * input_scale
    elif cfg.arch == "jumprelu":
        l1 = l1_eff = DEFAULT_JUMPRELU_L0 if cfg.l1 is None else cfg.l1
    batch = min(cfg.batch_size, n_train)
    per_epoch = max(1, n_train // batch)
    if cfg.steps is not None:
        total = cfg.steps
    elif cfg.epochs is not None:
        total = cfg.epochs * per_epoch
    else:
        epochs = DEFAULT_EPOCHS
        epochs = min(epochs, max(1, MAX_AUTO_SAMPLES // (per_epoch * batch)))
        epochs = max(epochs, math.ceil(MIN_AUTO_STEPS / per_epoch))
        total = epochs * per_epoch
    dead_after = cfg.dead_after_samples or min(10_000_000, max(n_train, batch))
    prefixes = tuple(sorted({max(1, round(f * d_sae)) for f in cfg.matryoshka_prefixes}))
    return Plan(
        d_in=d_in, d_sae=d_sae, k=k, l1=l1, l1_effective=l1_eff,
        k_aux=min(cfg.k_aux if cfg.k_aux is not None else max(1, d_in // 2), d_sae),
        batch_size=batch, n_train=n_train, n_val=n_val, steps_per_epoch=per_epoch,
        total_steps=int(total), dead_after_samples=int(dead_after), prefix_sizes=prefixes,
    )


def stored_config(sae_dir: str | os.PathLike[str]) -> TrainConfig | None:
    """The TrainConfig recorded in ``sae_dir/cfg.json`` (None when absent or unreadable)."""
    cfg_path = Path(sae_dir) / "cfg.json"
    try:
        train = dict(json.loads(cfg_path.read_text(encoding="utf-8")).get("train") or {})
    except (OSError, ValueError, AttributeError):
        return None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in train.items() if k in names}) if train \
        else None
