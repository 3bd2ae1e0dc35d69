"""SAE trainer: a step-based core generator yielding :class:`Progress` (DESIGN.md §5.2).

``train_job`` trains one SAE into ``out_dir``; ``sweep_job`` trains several (e.g. a grid of λ
or k) from **one pass over the data**: every batch is read and normalised once and fed to each
SAE in turn. Both are generators: the CLI drives them with a progress bar, the desktop app on a
worker thread, cancelling by ``close()`` — which saves a resumable checkpoint whose ``cfg.json``
says ``"complete": false``.

Output folder of one SAE::

    cfg.json, sae.safetensors      the SAE (checkpoint.py), exported every checkpoint
    train_log.jsonl                one JSON object per logged step / evaluation
    resume/state-<step>.safetensors  parameters, Adam moments, counters, RNG, position

Exact resume: the data order is a pure function of (seed, epoch) (data.py), and everything else
that evolves (parameters, Adam state, dead-latent counters, BatchTopK threshold, resampling RNG)
is in the state file, so a resumed run continues bit-for-bit like an uninterrupted one on the
same machine and thread count. The state file is written to a temporary name and renamed;
the previous one is deleted only after the new one (of every SAE in a sweep) exists.

No printing, no Qt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsae_desktop.core.errors import MedsaeError, UsageError
from medsae_desktop.core.progress import Progress
from medsae_desktop.core.sae.checkpoint import (
    CFG_NAME, CREATED_BY, LOG_NAME, RESUME_DIR, save_sae)
from medsae_desktop.core.sae.config import Plan, TrainConfig, resolve, stored_config, validate
from medsae_desktop.core.sae.data import BatchStream, CacheSplit, prepare_split, read_rows
from medsae_desktop.core.sae.model import (
    SPARSE_ARCHS, SPARSE_MAX_DENSITY, ArchSpec, StepStats, TrainableSAE, geometric_median)

logger = logging.getLogger(__name__)

#: Fields that must agree between SAEs of one sweep (they define the shared data pass).
DATA_FIELDS = ("seed", "batch_size", "val_fraction", "epochs", "steps", "device",
               "checkpoint_every", "log_every", "buffer_rows")
#: Dense fraction threshold: a latent firing on more than this share of samples is "dense".
DENSE_FREQ = 0.1
_PERIODIC_EVAL_ROWS = 8192
#: batch · d_in · d_sae below which training runs single-threaded on CPU.
_SMALL_WORK = 1 << 25


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished (or cancelled) training job returns.

    Attributes
    ----------
    sae_dirs
        One folder per SAE (one for ``train_job``).
    metrics
        Final validation metrics per SAE (same order): mse, fvu, l0, dead_frac, dense_frac,
        plus n_eval/eval_split, steps, time_s (time spent in training steps, shared equally
        by the SAEs of a sweep) and samples_per_s (= steps · batch / time_s).
    steps
        Steps completed.
    complete
        False when cancelled before the last step (a resumable checkpoint was saved).
    """

    sae_dirs: tuple[Path, ...]
    metrics: tuple[dict[str, Any], ...]
    steps: int
    complete: bool


# ---- one SAE -----------------------------------------------------------------------------------
class _Run:
    """State and update rule of one SAE being trained (not thread-safe; one step at a time)."""

    def __init__(self, name: str, sae_dir: Path, cfg: TrainConfig, plan: Plan,
                 split: CacheSplit, device: torch.device) -> None:
        self.name = name
        self.dir = sae_dir
        self.cfg = cfg
        self.plan = plan
        self.split = split
        self.device = device
        self.spec = ArchSpec(
            arch=cfg.arch, d_in=plan.d_in, d_sae=plan.d_sae, k=plan.k, l1=plan.l1_effective,
            k_aux=plan.k_aux, auxk_alpha=cfg.auxk_alpha, bandwidth=cfg.jumprelu_bandwidth,
            prefix_sizes=plan.prefix_sizes, threshold_beta=cfg.threshold_beta)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = TrainableSAE(self.spec, gen).to(device)
        fused = device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                    eps=1e-8, fused=fused)
        m = plan.d_sae
        self.since_fired = torch.zeros(m, dtype=torch.int64, device=device)  # samples
        self.steps_inactive = torch.zeros(m, dtype=torch.int64, device=device)  # steps
        self.rng = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)  # resampling
        self.step = 0
        self.elapsed_s = 0.0
        self.n_resampled = 0
        prec = cfg.precision
        if prec == "auto":
            prec = "bf16" if device.type == "cuda" else "fp32"
        self.autocast = torch.bfloat16 if prec == "bf16" else None
        self.use_sparse = (device.type == "cpu" and cfg.arch in SPARSE_ARCHS
                           and cfg.kernels != "dense" and self.autocast is None)
        self._pre_buf: torch.Tensor | None = None
        self.last: StepStats | None = None

    # ---- update ----------------------------------------------------------------------------
    def train_step(self, x_bd: torch.Tensor) -> StepStats:
        model, spec = self.model, self.spec
        if self.step == 0:
            with torch.no_grad():
                model.b_dec_d.copy_(geometric_median(x_bd))
        dead = None
        if spec.arch in ("topk", "batchtopk", "matryoshka"):
            dead = self.since_fired >= self.plan.dead_after_samples
        self.opt.zero_grad(set_to_none=True)
        stats = None
        if self.use_sparse:
            if self._pre_buf is None:
                self._pre_buf = torch.empty(x_bd.shape[0], spec.d_sae)
            stats = model.sparse_grads(
                x_bd, dead, self._pre_buf,
                max_density=1.0 if self.cfg.kernels == "sparse" else SPARSE_MAX_DENSITY)
        if stats is None:
            loss, stats = model.dense_loss(x_bd, dead, self.autocast)
            loss.backward()
            model.remove_parallel_grad()  # (the sparse path returns it projected already)
        self.opt.step()
        model.normalize_decoder()
        with torch.no_grad():
            fired = stats.fired_s.to(self.device)
            self.since_fired += x_bd.shape[0]
            self.since_fired[fired] = 0
            self.steps_inactive += 1
            self.steps_inactive[fired] = 0
            if stats.cutoff is not None:
                thr = float(model.threshold)
                beta = spec.threshold_beta
                model.threshold.fill_(stats.cutoff if thr < 0 else
                                      beta * thr + (1 - beta) * stats.cutoff)
        self.step += 1
        every = self.cfg.resample_every
        if spec.arch == "relu" and every > 0 and self.step % every == 0:
            self._resample(x_bd)
        self.last = stats
        return stats

    @torch.no_grad()
    def _resample(self, x_bd: torch.Tensor) -> None:
        """Anthropic-style resampling of latents inactive for over half a period (paper code)."""
        model = self.model
        dead = self.steps_inactive > self.cfg.resample_every // 2
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        acts = model.encode_eval(x_bd)
        x_hat = acts @ model.W_dec_sd + model.b_dec_d
        losses = torch.linalg.vector_norm(x_bd - x_hat, dim=1).cpu()
        n = min(n_dead, x_bd.shape[0])
        if float(losses.sum()) <= 0:
            return
        pick = torch.multinomial(losses, n, replacement=False, generator=self.rng).to(x_bd.device)
        dead_idx = dead.nonzero().squeeze(1)[:n]
        vecs = x_bd[pick]
        alive = ~dead
        alive_norm = (torch.linalg.vector_norm(model.W_enc_sd[alive], dim=1).mean()
                      if bool(alive.any()) else torch.tensor(1.0, device=x_bd.device))
        model.W_enc_sd[dead_idx] = vecs * alive_norm * 0.2
        model.W_dec_sd[dead_idx] = vecs / torch.linalg.vector_norm(vecs, dim=1,
                                                                    keepdim=True).clamp_min(1e-12)
        model.b_enc_s[dead_idx] = 0.0
        for p in (model.W_enc_sd, model.W_dec_sd, model.b_enc_s):
            st = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key][dead_idx] = 0.0
        self.steps_inactive[dead_idx] = 0
        self.n_resampled += n

    def dead_frac_live(self) -> float:
        """Share of latents that have not fired for ``dead_after_samples`` samples."""
        return float((self.since_fired >= self.plan.dead_after_samples).float().mean())

    # ---- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, chunks: Sequence[np.ndarray], split_name: str) -> dict[str, Any]:
        """Reconstruction metrics with batch-independent inference activations (§5.2 step 4).

        mse is per element in the normalised space; fvu = Σ‖x̃ − x̂‖² / Σ‖x̃ − mean‖²; dead_frac
        = latents never active on the evaluated rows; dense_frac = latents active on more than
        10 % of them.
        """
        model = self.model
        m = self.spec.d_sae
        n = 0
        sse = 0.0
        l0 = 0.0
        freq = torch.zeros(m, dtype=torch.float64, device=self.device)
        s1 = torch.zeros(self.plan.d_in, dtype=torch.float64, device=self.device)
        s2 = 0.0
        for x_nd in chunks:
            for lo in range(0, len(x_nd), 1024):
                x = torch.from_numpy(np.ascontiguousarray(x_nd[lo:lo + 1024])).to(self.device)
                acts = model.encode_eval(x)
                x_hat = acts @ model.W_dec_sd + model.b_dec_d
                sse += float(((x - x_hat) ** 2).double().sum())
                active = acts > 0
                l0 += float(active.sum())
                freq += active.sum(0).double()
                s1 += x.double().sum(0)
                s2 += float((x.double() ** 2).sum())
                n += x.shape[0]
        if n == 0:
            return {}
        var = s2 - float(s1 @ s1) / n
        freq /= n
        return {
            "mse": sse / (n * self.plan.d_in),
            "fvu": sse / max(var, 1e-12),
            "l0": l0 / n,
            "dead_frac": float((freq == 0).double().mean()),
            "dense_frac": float((freq > DENSE_FREQ).double().mean()),
            "n_eval": n,
            "eval_split": split_name,
        }

    # ---- persistence -----------------------------------------------------------------------
    def sae_cfg(self, complete: bool, metrics: dict[str, Any] | None) -> dict[str, Any]:
        train = self.cfg.to_dict()
        train["resolved"] = self.plan.to_dict()
        train["steps_done"] = self.step
        train["cache"] = {"path": str(self.split.path), "fingerprint": self.split.fingerprint,
                          "n_rows": self.split.n_rows}
        if self.n_resampled:
            train["n_resampled"] = self.n_resampled
        return {
            "arch": self.cfg.arch, "d_in": self.plan.d_in, "d_sae": self.plan.d_sae,
            "k": self.plan.k, "l1": self.plan.l1, "input_scale": self.split.input_scale,
            "encoder": self.split.encoder, "train": train, "metrics": metrics or {},
            "created_by": CREATED_BY, "complete": complete,
            "prefix_sizes": list(self.plan.prefix_sizes) if self.cfg.arch == "matryoshka"
            else None,
        }

    def export(self, complete: bool, metrics: dict[str, Any] | None = None) -> None:
        tensors = self.model.export(self.split.input_mean_d)  # input_scale goes to cfg.json
        save_sae(self.dir, tensors, self.sae_cfg(complete, metrics))

    def state_path(self, step: int) -> Path:
        return self.dir / RESUME_DIR / f"state-{step:09d}.safetensors"

    def save_state(self) -> Path:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for name, t in self.model.state_dict().items():
            tensors[f"model.{name}"] = t.detach().cpu().contiguous()
        for i, p in enumerate(self.model.parameters()):
            for key, t in self.opt.state.get(p, {}).items():
                tensors[f"adam.{i}.{key}"] = t.detach().cpu().reshape(t.shape).contiguous()
        tensors["since_fired"] = self.since_fired.cpu()
        tensors["steps_inactive"] = self.steps_inactive.cpu()
        tensors["rng"] = self.rng.get_state()
        meta = {"step": self.step, "elapsed_s": self.elapsed_s, "n_resampled": self.n_resampled,
                "config": self.cfg.to_dict(), "plan": self.plan.to_dict(),
                "fingerprint": self.split.fingerprint, "name": self.name}
        path = self.state_path(self.step)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def load_state(self, path: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta["fingerprint"] != self.split.fingerprint:
            raise MedsaeError("the cache changed since this run started; resume needs the same "
                              "cache", self.split.path)
        sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(sd)
        # Fused Adam keeps 'step' as a tensor on the parameter's device, like the moments.
        for i, p in enumerate(self.model.parameters()):
            st = {key: tensors[f"adam.{i}.{key}"].to(self.device)
                  for key in ("step", "exp_avg", "exp_avg_sq") if f"adam.{i}.{key}" in tensors}
            if st:
                self.opt.state[p] = st
        self.since_fired = tensors["since_fired"].to(self.device)
        self.steps_inactive = tensors["steps_inactive"].to(self.device)
        self.rng.set_state(tensors["rng"])
        self.step = int(meta["step"])
        self.elapsed_s = float(meta["elapsed_s"])
        self.n_resampled = int(meta.get("n_resampled", 0))

    def prune_states(self, keep_step: int) -> None:
        for p in (self.dir / RESUME_DIR).glob("state-*.safetensors"):
            if p.name != self.state_path(keep_step).name:
                p.unlink(missing_ok=True)
        for p in (self.dir / RESUME_DIR).glob(".state-*.tmp"):
            p.unlink(missing_ok=True)

    def saved_steps(self) -> set[int]:
        out = set()
        for p in (self.dir / RESUME_DIR).glob("state-*.safetensors"):
            try:
                out.add(int(p.stem.split("-")[1]))
            except ValueError:
                continue
        return out


# ---- logging -----------------------------------------------------------------------------------
def _append_log(run: _Run, record: dict[str, Any]) -> None:
    with open(run.dir / LOG_NAME, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _truncate_log(run: _Run, step: int) -> None:
    """Drop log lines after ``step`` (they belong to the part of the run being redone)."""
    path = run.dir / LOG_NAME
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, json.JSONDecodeError):
            break  # a line torn by a kill: everything after it is unreliable
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    os.replace(tmp, path)


# ---- jobs --------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return dev


def train_job(cache_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
              config: TrainConfig, resume: bool = False) -> Generator[Progress, None, TrainResult]:
    """Train one SAE from an embedding cache into ``out_dir`` (a generator job).

    Parameters
    ----------
    cache_path
        HDF5 embedding cache (DESIGN.md §4.1).
    out_dir
        SAE folder (DESIGN.md §4.2). Must be new or empty unless ``resume``.
    config
        Training settings.
    resume
        Continue the run saved in ``out_dir`` exactly (same config required).

    Yields
    ------
    Progress
        ``done``/``total`` in steps; ``metrics`` with loss, mse, fvu, l0, dead_frac,
        samples_per_s, epoch (and ``val_*`` after each evaluation).

    Returns
    -------
    TrainResult
    """
    return (yield from sweep_job(cache_path, out_dir, [config], resume=resume, _single=True))


def sweep_name(cfg: TrainConfig, base: TrainConfig) -> str:
    """Folder name of one SAE of a sweep: the fields that differ from ``base``."""
    diffs = [f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
             if getattr(cfg, f.name) != getattr(base, f.name)]
    return ",".join(diffs) or "base"


def sweep_job(cache_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
              configs: Sequence[TrainConfig], resume: bool = False,
              names: Sequence[str] | None = None, _single: bool = False,
              ) -> Generator[Progress, None, TrainResult]:
    """Train several SAEs from one pass over the data (each batch read once, fed to all).

    SAE *i* is written to ``out_dir/names[i]`` (names default to the settings that differ from
    the first config, e.g. ``l1=0.01``). Data settings (:data:`DATA_FIELDS`) must agree.
    See :func:`train_job` for the yielded progress and the result.
    """
    configs = list(configs)
    if not configs:
        raise UsageError("no SAE configurations given")
    for c in configs:
        validate(c)
        for f in DATA_FIELDS:
            if getattr(c, f) != getattr(configs[0], f):
                raise UsageError(f"SAEs of one sweep must share {f} (one data pass)")
    out_dir = Path(out_dir)
    if _single:
        dirs = [out_dir]
        names = ["sae"]
    else:
        names = list(names) if names is not None else [sweep_name(c, configs[0])
                                                       for c in configs]
        if len(set(names)) != len(names):
            raise UsageError("sweep produces duplicate SAE names")
        dirs = [out_dir / n for n in names]
    for d in dirs:
        if not resume and d.exists() and any(d.iterdir()):
            raise UsageError(f"{d} already holds files; pass --resume to continue that run "
                             "or choose a new output folder")
    base = configs[0]
    device = _device(base.device)

    yield Progress(0, None, "reading cache: id split and normalisation")
    split = prepare_split(cache_path, base.val_fraction)
    plans = [resolve(c, d_in=split.d_in, n_train=split.n_train, n_val=split.n_val,
                     input_scale=split.input_scale) for c in configs]
    plan0 = plans[0]
    runs = [_Run(n, d, c, p, split, device) for n, d, c, p in zip(names, dirs, configs, plans)]

    start = 0
    if resume:
        have = [r.saved_steps() for r in runs]
        common = set.intersection(*have) if have else set()
        if common:
            start = max(common)
            for r in runs:
                path = r.state_path(start)
                _check_same_config(path, r.cfg)
                r.load_state(path)
                _truncate_log(r, start)
        elif any(have):
            raise MedsaeError("resume states of the sweep do not share a step", out_dir)
        elif any((d / CFG_NAME).exists() for d in dirs):
            stored = stored_config(dirs[0])
            if stored is not None and stored != runs[0].cfg:
                raise UsageError("settings differ from the run in the output folder")
            done = [json.loads((d / CFG_NAME).read_text()).get("complete") for d in dirs
                    if (d / CFG_NAME).exists()]
            if done and all(done):
                raise MedsaeError("this training run is already complete", out_dir)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        if start == 0:
            (d / LOG_NAME).unlink(missing_ok=True)
    if not _single:
        meta = {"schema_version": 1, "saes": names, "configs": [c.to_dict() for c in configs],
                "created_by": CREATED_BY}
        (out_dir / "sweep.json").write_text(json.dumps(meta, indent=2) + "\n")

    total = plan0.total_steps
    eval_every = plan0.steps_per_epoch * max(1, math.ceil(
        total / plan0.steps_per_epoch / 100))
    val_cache = _periodic_eval_rows(split)
    batch_size = plan0.batch_size
    step = start
    t_last = time.perf_counter()
    n_since = 0
    complete = False
    mid_step = False
    final_metrics: list[dict[str, Any]] = [{} for _ in runs]
    stream = BatchStream(split, seed=base.seed, batch_size=batch_size,
                         steps_per_epoch=plan0.steps_per_epoch, start_step=start,
                         total_steps=total, buffer_rows=base.buffer_rows)
    msg = f"resumed at step {start}" if start else "training"
    yield Progress(start, total, msg, {"epoch": start // plan0.steps_per_epoch})
    threads_before = torch.get_num_threads()
    if device.type == "cpu" and batch_size * plan0.d_in * max(p.d_sae for p in plans) < _SMALL_WORK:
        # Small models: each op is too short to amortise waking OpenMP workers, and on a busy
        # machine their spin-waiting makes training many times slower (measured 10-20x).
        torch.set_num_threads(1)
    try:
        with stream:
            for step_i, epoch, x_np in stream:
                assert step_i == step, f"data stream at step {step_i}, trainer at {step}"
                x_bd = torch.from_numpy(x_np).to(device, non_blocking=True)
                t0 = time.perf_counter()
                mid_step = True  # an exception now leaves parameters half-updated
                for r in runs:
                    r.train_step(x_bd)
                mid_step = False
                dt = time.perf_counter() - t0
                for r in runs:
                    r.elapsed_s += dt / len(runs)
                step += 1
                n_since += batch_size
                metrics: dict[str, float] = {}
                if step % base.log_every == 0 or step == total:
                    now = time.perf_counter()
                    sps = n_since / max(now - t_last, 1e-9)
                    t_last, n_since = now, 0
                    for r in runs:
                        metrics.update(_log_step(r, step, epoch, sps, prefix=len(runs) > 1))
                if step % eval_every == 0 and step < total and val_cache[0]:
                    for r in runs:
                        val = r.evaluate(val_cache[0], val_cache[1])
                        _append_log(r, {"step": step, "epoch": epoch, "val": val})
                        metrics.update(_prefixed({f"val_{k}": v for k, v in val.items()
                                                  if isinstance(v, float)}, r, len(runs) > 1))
                if step % base.checkpoint_every == 0 and step < total:
                    _checkpoint(runs, complete=False)
                # Yield every step (cheap): cancelling by close() then waits one step at most.
                if metrics:
                    metrics["epoch"] = float(epoch)
                yield Progress(step, total, f"epoch {epoch + 1}", metrics)
        yield Progress(step, total, "final evaluation")
        for i, r in enumerate(runs):
            final_metrics[i] = _final_metrics(r, split)
            _append_log(r, {"step": step, "final": final_metrics[i]})
        _checkpoint(runs, complete=True, metrics=final_metrics)
        complete = True
        for r in runs:  # a finished run needs no resume state (it is 3x the SAE's size)
            shutil.rmtree(r.dir / RESUME_DIR, ignore_errors=True)
    finally:
        torch.set_num_threads(threads_before)
        # Cancelled (generator closed at a yield, i.e. between steps) or failed between steps:
        # keep the progress. Never checkpoint a half-applied step: resume must stay exact
        # (the last periodic checkpoint is then the resume point).
        if not complete and not mid_step and runs[0].step > 0:
            _checkpoint(runs, complete=False)
    return TrainResult(sae_dirs=tuple(dirs), metrics=tuple(final_metrics), steps=step,
                       complete=complete)


def _check_same_config(state_path: Path, cfg: TrainConfig) -> None:
    from safetensors import safe_open

    with safe_open(str(state_path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    stored = TrainConfig.from_dict(meta["config"])
    if stored != cfg:
        diffs = [f"{f.name} {getattr(stored, f.name)!r}→{getattr(cfg, f.name)!r}"
                 for f in dataclasses.fields(cfg)
                 if getattr(stored, f.name) != getattr(cfg, f.name)]
        raise UsageError("--resume needs the settings of the interrupted run; differing: "
                         + ", ".join(diffs))


def _prefixed(metrics: dict[str, float], run: _Run, on: bool) -> dict[str, float]:
    return {(f"{run.name}/{k}" if on else k): v for k, v in metrics.items()}


def _log_step(run: _Run, step: int, epoch: int, sps: float, prefix: bool) -> dict[str, float]:
    st = run.last
    assert st is not None, "log before the first step"
    rec = {"loss": st.loss, "mse": st.mse, "sparsity": st.sparsity, "aux": st.aux,
           "fvu": st.fvu, "l0": st.l0, "dead_frac": run.dead_frac_live()}
    _append_log(run, {"step": step, "epoch": epoch, **rec, "samples_per_s": sps})
    return _prefixed({**rec, "samples_per_s": sps}, run, prefix)


def _periodic_eval_rows(split: CacheSplit) -> tuple[list[np.ndarray], str]:
    if split.n_val > 0:
        return list(read_rows(split, "val", _PERIODIC_EVAL_ROWS)), "val"
    return [], "none"


def _final_metrics(run: _Run, split: CacheSplit) -> dict[str, Any]:
    if split.n_val > 0:
        out = run.evaluate(read_rows(split, "val", chunk_rows=16_384), "val")
    else:  # no held-out ids (tiny cache or --val-fraction 0): say so instead of hiding it
        out = run.evaluate(read_rows(split, "train", 65_536, chunk_rows=16_384), "train")
    out["time_s"] = run.elapsed_s
    out["samples_per_s"] = run.step * run.plan.batch_size / max(run.elapsed_s, 1e-9)
    out["steps"] = run.step
    return out


def _checkpoint(runs: Sequence[_Run], complete: bool,
                metrics: Sequence[dict[str, Any]] | None = None) -> None:
    """Export every SAE and its resume state; drop older states once all new ones exist."""
    for i, r in enumerate(runs):
        r.save_state()
        r.export(complete, None if metrics is None else metrics[i])
    for r in runs:
        r.prune_states(r.step)
