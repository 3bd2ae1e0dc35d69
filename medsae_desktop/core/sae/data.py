"""Training data from an HDF5 embedding cache: id-based split, normalisation, shuffled stream.

Memory is bounded by ``buffer_rows``, not by the cache size: the cache is read in contiguous
blocks of ``BLOCK_ROWS`` rows (the cache's HDF5 chunk height); each epoch visits the blocks in a
random order, ``buffer_rows // BLOCK_ROWS`` blocks at a time ("group"), and shuffles the rows of
a group. When the whole training split fits in one group this is a full shuffle per epoch.

Every epoch's row order is a pure function of ``(seed, epoch)``, so a batch is addressed by
``(epoch, index)`` alone: resuming at step *s* regenerates the plan and starts reading at the
group holding that batch, with no state to save. A background thread reads and normalises
ahead (bounded queue) so the training thread never waits on HDF5 in the steady state.

No torch here (numpy arrays out); no printing.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from medsae_desktop.core.cache import EmbeddingCache
from medsae_desktop.core.errors import MedsaeError

#: Rows per read block; equal to the cache's chunk height so a block read touches one chunk.
BLOCK_ROWS = 1024
_ID_CHUNK = 65_536


def val_mask_of_ids(ids: np.ndarray, val_fraction: float) -> np.ndarray:
    """Validation membership of each image id: a hash of the id, independent of row order.

    The same image is on the same side of the split in every cache and run, so validation
    metrics are comparable across seeds and never leak training images.
    """
    if val_fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    cut = int(val_fraction * 2**32)
    out = np.empty(len(ids), dtype=bool)
    for i, key in enumerate(ids):
        h = hashlib.blake2b(str(key).encode(), digest_size=4).digest()
        out[i] = int.from_bytes(h, "little") < cut
    return out


@dataclass(frozen=True)
class CacheSplit:
    """The training/validation split of one cache and its normalisation.

    Attributes
    ----------
    path
        The cache file.
    n_rows, d_in
        Cache size.
    val_mask_n
        True for validation rows (bool, (N,)).
    input_mean_d, input_scale
        x̃ = s·(x − μ) fitted on training rows only (DESIGN.md §5.2 step 1).
    encoder
        The cache's encoder description (copied into the SAE's cfg.json).
    fingerprint
        Hash of size, encoder and ids: a resumed run must see the same cache.
    """

    path: Path
    n_rows: int
    d_in: int
    val_mask_n: np.ndarray
    input_mean_d: np.ndarray
    input_scale: float
    encoder: dict
    fingerprint: str

    @property
    def n_val(self) -> int:
        """Validation rows."""
        return int(self.val_mask_n.sum())

    @property
    def n_train(self) -> int:
        """Training rows."""
        return self.n_rows - self.n_val

    def normalize(self, x_nd: np.ndarray) -> np.ndarray:
        """x̃ = s·(x − μ), float32, in place when ``x_nd`` is float32."""
        x_nd = np.asarray(x_nd, dtype=np.float32)
        x_nd -= self.input_mean_d
        x_nd *= np.float32(self.input_scale)
        return x_nd


def prepare_split(cache_path: str | Path, val_fraction: float,
                  chunk_rows: int = 65_536) -> CacheSplit:
    """Split a cache by image id and fit the normalisation on its training rows.

    Reads ids and embeddings in chunks (two streaming passes), so caches larger than memory
    work. Raises :class:`MedsaeError` for unreadable caches and degenerate data.
    """
    path = Path(cache_path)
    with EmbeddingCache(path) as cache:
        n, d = len(cache), cache.embedding_dim
        encoder = cache.encoder
        if n == 0:
            raise MedsaeError("embedding cache is empty", path)
        digest = hashlib.sha256(f"{n}:{d}:{json.dumps(encoder, sort_keys=True)}".encode())
        masks = []
        with h5py.File(path, "r") as f:  # chunked id reads: never hold all N strings at once
            ids_ds = f["ids"]
            for start in range(0, n, _ID_CHUNK):
                ids = ids_ds.asstr()[start:start + _ID_CHUNK]
                digest.update("\n".join(ids).encode())
                masks.append(val_mask_of_ids(ids, val_fraction))
        val_mask = np.concatenate(masks)
        if val_mask.all():
            raise MedsaeError(f"--val-fraction {val_fraction} leaves no training rows", path)
        sum_d = np.zeros(d, np.float64)
        sumsq = 0.0
        n_train = 0
        for start, x_nd in cache.iter_chunks(chunk_rows):
            x_nd = x_nd[~val_mask[start:start + len(x_nd)]].astype(np.float64)
            if not np.isfinite(x_nd).all():
                raise MedsaeError("embeddings contain NaN or infinite values", path)
            sum_d += x_nd.sum(0)
            sumsq += float(np.einsum("nd,nd->", x_nd, x_nd))
            n_train += len(x_nd)
    mean_d = sum_d / n_train
    # E‖x − μ‖² = E‖x‖² − ‖μ‖²; float64 accumulators keep this accurate for unit-norm inputs.
    var_total = sumsq / n_train - float(mean_d @ mean_d)
    if not var_total > 1e-12 * max(1.0, sumsq / n_train):
        raise MedsaeError("training embeddings are all identical (zero variance)", path)
    scale = float(np.sqrt(d / var_total))
    return CacheSplit(path=path, n_rows=n, d_in=d, val_mask_n=val_mask,
                      input_mean_d=mean_d.astype(np.float32), input_scale=scale,
                      encoder=encoder, fingerprint=digest.hexdigest())


def read_rows(split: CacheSplit, which: str, max_rows: int | None = None,
              chunk_rows: int = 65_536) -> Iterator[np.ndarray]:
    """Yield normalised float32 chunks of the ``"val"`` or ``"train"`` rows, in row order."""
    want_val = which == "val"
    left = max_rows if max_rows is not None else split.n_rows
    with EmbeddingCache(split.path) as cache:
        for start, x_nd in cache.iter_chunks(chunk_rows):
            keep = split.val_mask_n[start:start + len(x_nd)] == want_val
            x_nd = x_nd[keep][:left]
            if len(x_nd):
                left -= len(x_nd)
                yield split.normalize(x_nd)
            if left <= 0:
                return


class EpochPlan:
    """Row order of one epoch: blocks in random order, rows shuffled within groups of blocks.

    Parameters
    ----------
    split
        Which rows are training rows.
    seed, epoch
        The order is a pure function of these.
    buffer_rows
        Group size in rows (rounded down to whole blocks, at least one block).
    """

    def __init__(self, split: CacheSplit, seed: int, epoch: int, buffer_rows: int) -> None:
        rng = np.random.default_rng([int(seed), int(epoch), 0x5AE])
        n_blocks = -(-split.n_rows // BLOCK_ROWS)
        per_group = max(1, buffer_rows // BLOCK_ROWS)
        block_order = rng.permutation(n_blocks)
        train_n = ~split.val_mask_n
        self.groups: list[np.ndarray] = []  # block ids of each group, in read order
        orders = []
        starts = [0]
        for g0 in range(0, n_blocks, per_group):
            blocks = np.sort(block_order[g0:g0 + per_group])  # sorted: sequential disk reads
            rows = np.concatenate([np.arange(b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS,
                                                                 split.n_rows)) for b in blocks])
            rows = rows[train_n[rows]]
            orders.append(rows[rng.permutation(len(rows))])
            self.groups.append(blocks)
            starts.append(starts[-1] + len(rows))
        self.order_n = np.concatenate(orders)  # training rows of the epoch, in visiting order
        self.group_start = np.asarray(starts, dtype=np.int64)  # position where each group begins


class BatchStream:
    """Background-thread iterator over training batches, from a given global step.

    Yields ``(step, epoch, x_bd)`` with ``x_bd`` normalised float32 of shape (batch, d).
    Each epoch has ``steps_per_epoch`` full batches; the remainder of an epoch is not used
    (it differs every epoch, so no row is systematically skipped).

    Use as a context manager (``close`` stops the thread).
    """

    def __init__(self, split: CacheSplit, *, seed: int, batch_size: int, steps_per_epoch: int,
                 start_step: int, total_steps: int, buffer_rows: int, prefetch: int = 4) -> None:
        self.split = split
        self.seed = seed
        self.batch = batch_size
        self.per_epoch = steps_per_epoch
        self.start_step = start_step
        self.total_steps = total_steps
        self.buffer_rows = max(buffer_rows, batch_size)
        self._q: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sae-batches", daemon=True)
        self._thread.start()

    # ---- producer ---------------------------------------------------------------------------
    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with EmbeddingCache(self.split.path) as cache:
                step = self.start_step
                while step < self.total_steps and not self._stop.is_set():
                    epoch, j0 = divmod(step, self.per_epoch)
                    n_here = min(self.per_epoch - j0, self.total_steps - step)
                    for x_bd in self._epoch_batches(cache, epoch, j0, n_here):
                        if not self._put((step, epoch, x_bd)):
                            return
                        step += 1
            self._put(None)
        except BaseException as exc:  # forwarded to the consumer, which re-raises it
            self._put(exc)

    def _epoch_batches(self, cache: EmbeddingCache, epoch: int, j0: int,
                       n_batches: int) -> Iterator[np.ndarray]:
        plan = EpochPlan(self.split, self.seed, epoch, self.buffer_rows)
        pos = j0 * self.batch
        end = (j0 + n_batches) * self.batch
        g = int(np.searchsorted(plan.group_start, pos, side="right") - 1)
        carry = np.empty((0, self.split.d_in), np.float32)
        while pos < end and g < len(plan.groups):
            lo, hi = max(pos, int(plan.group_start[g])), int(plan.group_start[g + 1])
            rows = plan.order_n[lo:min(hi, end)]
            pos = lo + len(rows)
            data = self._read_group(cache, rows)
            data = np.concatenate([carry, data]) if len(carry) else data
            n_full = len(data) // self.batch
            for i in range(n_full):
                yield data[i * self.batch:(i + 1) * self.batch]
            carry = data[n_full * self.batch:]
            g += 1

    def _read_group(self, cache: EmbeddingCache, rows_n: np.ndarray) -> np.ndarray:
        """Embeddings of ``rows_n``, normalised, in the given order (float32 (n, d))."""
        if len(rows_n) == 0:
            return np.empty((0, self.split.d_in), np.float32)
        n = self.split.n_rows
        # Only the blocks holding a wanted row are read (a resumed start skips the others);
        # runs of consecutive blocks become one contiguous read.
        needed = np.unique(rows_n // BLOCK_ROWS)
        lo_b = needed * BLOCK_ROWS
        lens = np.minimum(lo_b + BLOCK_ROWS, n) - lo_b
        buf_off = np.concatenate([[0], np.cumsum(lens)[:-1]])
        breaks = np.flatnonzero(np.diff(needed) != 1) + 1
        parts = []
        for run in np.split(np.arange(len(needed)), breaks):
            parts.append(cache.read_embeddings(int(lo_b[run[0]]),
                                               int(lo_b[run[-1]] + lens[run[-1]])))
        buf = np.concatenate(parts) if len(parts) > 1 else parts[0]
        bi = np.searchsorted(needed, rows_n // BLOCK_ROWS)
        out = buf[buf_off[bi] + rows_n - lo_b[bi]]
        return self.split.normalize(out)

    # ---- consumer ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the reader thread and wait for it."""
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
