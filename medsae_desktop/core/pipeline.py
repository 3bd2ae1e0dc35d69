"""The long jobs (embed, train, evaluate, name) as generators that yield Progress.

Every job here follows DESIGN.md §2 rule 2: it ``yield``s :class:`Progress` and ``return``s a
frozen result dataclass; it never prints and never touches Qt; closing the generator (UI
cancel) or Ctrl-C runs its ``finally`` blocks, which leave every finished piece of work on disk.
Drive a job with :func:`~medsae_desktop.core.progress.run_job`.

Sections (keep them self-contained; train/eval jobs may also live in their own modules):

* **embed** — :func:`embed_job`: images (folder or CheXpert CSV) → HDF5 embedding cache.
"""

import csv
import dataclasses
import io
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import Progress

if TYPE_CHECKING:
    from medsae_desktop.core.cache import CacheWriter
    from medsae_desktop.core.encoders import ImageEncoder

logger = logging.getLogger(__name__)


# =============================================================================================
# embed
# =============================================================================================
#
# Flow: collect inputs (sorted folder scan, or CSV rows in file order) → skip files whose
# (path, size, mtime, ctime) are recorded in the seen-memo with an id the cache already holds
# → decode + hash + preprocess on a thread pool (overlaps the encoder; PIL, zlib, numpy and
# torch release the GIL) → drop unreadable files (skipped report), already-cached ids and
# duplicates of this run → encode in batches → durable segments via CacheWriter → commit.
#
# Why a memo and not /paths: ids are content hashes and /paths are relative to whatever INPUT
# a run had, so "this relative path is in the cache" proves nothing (another folder can hold a
# different image under the same name; a file can be overwritten). The memo is keyed on the
# absolute path plus size, mtime and ctime (ctime cannot be set by copy tools), and maps to the
# id its pixels hashed to. It is only a shortcut: a hit is used only when that id is in the
# cache; a miss just costs a decode. Files modified less than _RACY_S seconds before the scan
# are not memoised (git's "racily clean" rule: a rewrite within the timestamp granularity
# would otherwise go unnoticed). Deleting the memo is always safe.

SKIPPED_SUFFIX = ".skipped.csv"
SEEN_SUFFIX = ".seen.tsv"
EMBED_DTYPES = ("float32", "float16")
_RACY_S = 2.0
_SEGMENT_SECONDS = 30.0  # also close a segment this often, so a crash loses little time


@dataclasses.dataclass(frozen=True)
class EmbedResult:
    """Outcome of one :func:`embed_job` run.

    Attributes
    ----------
    cache_path
        The cache written.
    n_inputs
        Image files considered (folder scan hits or CSV rows).
    n_new
        Images embedded and added by this run.
    n_known
        Inputs whose pixels were already in the cache (including segments left by a killed
        run, which this run committed).
    n_duplicates
        Inputs with the same pixels as an earlier input of this run (stored once).
    n_unreadable
        Inputs that could not be read; listed in :attr:`skipped_report`.
    n_total
        Images in the cache after this run.
    n_unlabelled
        With labels: new images that had no row in the labels CSV (stored with NaN labels).
    seconds
        Wall time of the run.
    embed_seconds
        Wall time from the first decode to the last encode (what images/s is measured over).
    skipped_report
        ``CACHE.h5.skipped.csv`` (columns ``path,reason``) when something was unreadable,
        else None.
    """

    cache_path: Path
    n_inputs: int
    n_new: int
    n_known: int
    n_duplicates: int
    n_unreadable: int
    n_total: int
    n_unlabelled: int
    seconds: float
    embed_seconds: float
    skipped_report: Path | None

    @property
    def images_per_s(self) -> float:
        """New images per second of decode + encode time (0 when nothing was embedded)."""
        return self.n_new / self.embed_seconds if self.embed_seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class _Item:
    rel_path: str            # stored in /paths: relative to the folder, or the CSV's Path cell
    abs_path: Path
    labels_c: np.ndarray | None


def skipped_report_path(cache_path: str | os.PathLike[str]) -> Path:
    """``CACHE.h5.skipped.csv`` beside the cache."""
    p = Path(cache_path)
    return p.with_name(p.name + SKIPPED_SUFFIX)


def seen_memo_path(cache_path: str | os.PathLike[str]) -> Path:
    """``CACHE.h5.seen.tsv`` beside the cache (file → pixel-id memo; safe to delete)."""
    p = Path(cache_path)
    return p.with_name(p.name + SEEN_SUFFIX)


def scan_image_folder(folder: str | os.PathLike[str]) -> list[str]:
    """Image files under ``folder``, recursively, as sorted POSIX paths relative to it.

    Hidden folders and files (names starting with ``.``) are skipped, symlinked folders are not
    followed (no cycles); which files count as images is
    :func:`~medsae_desktop.core.images.is_probably_image`. The order is the sorted relative
    path, so it is the same on every run and platform.
    """
    from medsae_desktop.core.images import is_probably_image

    root = Path(folder)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        for name in filenames:
            p = base / name
            if is_probably_image(p):
                found.append(p.relative_to(root).as_posix())
    return sorted(found)


def _collect_inputs(input_path: Path, labels_csv: Path | None
                    ) -> tuple[list[_Item], tuple[str, ...] | None]:
    from medsae_desktop.core.labels import read_label_csv

    if not input_path.exists():
        raise MedsaeError("input not found", input_path)
    table = read_label_csv(labels_csv) if labels_csv is not None else None
    if input_path.is_dir():
        rels = scan_image_folder(input_path)
        if not rels:
            raise MedsaeError("no images found (looked for *.dcm, *.dicom, *.png, *.jpg, "
                              "*.jpeg and extension-less DICOM, recursively)", input_path)
        items = [_Item(r, input_path / r, None) for r in rels]
        base_dir = input_path
    elif input_path.suffix.lower() == ".csv":
        input_table = read_label_csv(input_path)
        if len(input_table) == 0:
            raise MedsaeError("CSV has no rows", input_path)
        resolved = input_table.resolved_paths()
        if table is None and input_table.names:
            table = input_table                       # the CSV's own label columns
        items = [_Item(p, r, None) for p, r in zip(input_table.paths, resolved)]
        base_dir = input_path.parent
    else:
        raise MedsaeError("input must be a folder of images or a CSV with a Path column",
                          input_path)
    if table is None or not table.names:
        return items, None
    matcher = table.match(base_dir)
    labelled = []
    for it in items:
        row = matcher.row_of(it.rel_path)
        labelled.append(dataclasses.replace(
            it, labels_c=None if row is None else table.values_nc[row]))
    return labelled, table.names


class _SeenMemo:
    """``CACHE.h5.seen.tsv``: ``abs_path<TAB>size<TAB>mtime_ns<TAB>ctime_ns<TAB>id`` lines."""

    def __init__(self, path: Path, scan_time: float) -> None:
        self.path = path
        self._racy_ns = int((scan_time - _RACY_S) * 1e9)
        self._map: dict[str, str] = {}
        self._new: list[str] = []
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    key, sep, pid = line.rstrip("\n").rpartition("\t")
                    # A torn last line (killed mid-write) or junk is simply not a hit.
                    if sep and len(pid) == 64 and key.count("\t") == 3:
                        self._map[key] = pid
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("ignoring unreadable seen-memo %s (%s)", path, exc)

    def key(self, abs_path: Path) -> str | None:
        """Memo key of a file, or None when it cannot be stat'ed or memoised."""
        try:
            st = os.stat(abs_path)
        except OSError:
            return None
        p = os.path.abspath(abs_path)
        if "\t" in p or "\n" in p:
            return None
        return f"{p}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}"

    def get(self, key: str | None) -> str | None:
        return None if key is None else self._map.get(key)

    def add(self, key: str | None, image_id: str) -> None:
        if key is None or key in self._map:
            return
        mtime_ns, ctime_ns = (int(v) for v in key.split("\t")[2:4])
        if max(mtime_ns, ctime_ns) >= self._racy_ns:
            return  # changed too recently to trust the timestamps (see module comment)
        self._map[key] = image_id
        self._new.append(f"{key}\t{image_id}\n")

    def flush(self) -> None:
        if not self._new:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(self._new)
            self._new.clear()
        except OSError as exc:  # the memo is an optimisation; never fail a run over it
            logger.warning("cannot update seen-memo %s (%s)", self.path, exc)


def _warm_up_decoders() -> None:
    """Import the decoding libraries on this thread before the decode threads start.

    Python's import locks make concurrent first imports safe, but when an import *fails*
    part-way, other threads can see the half-initialised package ("partially initialized
    module 'pydicom' has no attribute 'uid'") and every file would be reported unreadable with
    a misleading reason. Importing once here surfaces such a broken installation as one
    warning naming the real cause. (pydicom registers its decoder plugins — pylibjpeg,
    openjpeg, rle, gdcm — when ``pydicom.pixels`` is imported; ``Image.init()`` loads all of
    Pillow's format plugins.)
    """
    try:
        import pydicom.pixels  # noqa: F401
        from PIL import Image

        Image.init()
    except Exception as exc:  # noqa: BLE001 - report, then let each file say what fails
        logger.warning("image decoding libraries failed to import (%s: %s); images will "
                       "probably be reported unreadable", type(exc).__name__, exc)


def _decode(abs_path: Path) -> tuple[str, np.ndarray]:
    """Worker: read → content id → network input (float32 (3, 224, 224))."""
    from medsae_desktop.core.encoders.preprocessing import preprocess_render
    from medsae_desktop.core.images import image_content_hash, read_image

    image = read_image(abs_path)
    return image_content_hash(image), preprocess_render(image.render_hw)


def _reason(exc: BaseException) -> str:
    """One-line reason for the skipped report (without the path prefix MedsaeError adds)."""
    if isinstance(exc, MedsaeError):
        msg = str(exc)
        if exc.path and msg.startswith(exc.path + ": "):
            msg = msg[len(exc.path) + 2:]
        return msg
    return f"unexpected error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _write_skipped(report: Path, skipped: Sequence[tuple[str, str]]) -> Path | None:
    if not skipped:
        report.unlink(missing_ok=True)   # a stale report from an earlier run would mislead
        return None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows(skipped)
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, report)
    return report


def _read_known_ids(cache_path: Path) -> tuple[set[str], bool]:
    """Ids in the committed cache and its pending segments, and whether segments are pending.

    Read without a :class:`~medsae_desktop.core.cache.CacheWriter` so that a run with nothing
    new to embed never has to load the model.
    """
    from medsae_desktop.core.cache import open_cache, wip_dir

    known: set[str] = set()
    if cache_path.exists():
        with open_cache(cache_path) as c:
            known.update(c.ids.tolist())
    wip = wip_dir(cache_path)
    segments = sorted(wip.glob("seg-*.h5")) if wip.is_dir() else []
    for seg in segments:
        try:
            with open_cache(seg) as s:
                known.update(s.ids.tolist())
        except MedsaeError:
            pass  # CacheWriter drops unreadable segments when it opens the cache
    return known, bool(segments)


EncoderSource = Union["ImageEncoder", Callable[[], "ImageEncoder"]]


class _EmbedRun:
    """State of one :func:`embed_job` run (counters, the lazily opened writer, the buffer)."""

    def __init__(self, cache_path: Path, encoder: EncoderSource, *, label_names: tuple[str, ...]
                 | None, patches: bool, dtype: str, segment_rows: int) -> None:
        self.cache_path = cache_path
        self._encoder_source = encoder
        self.encoder: ImageEncoder | None = None
        self.owns_encoder = False
        self.label_names = label_names
        self.patches = patches
        self.dtype = dtype
        self.segment_rows = segment_rows
        self.writer: CacheWriter | None = None
        self.known, self.has_pending_segments = _read_known_ids(cache_path)
        self.memo = _SeenMemo(seen_memo_path(cache_path), scan_time=time.time())
        self.done = self.n_new = self.n_known = self.n_dup = self.n_unlabelled = 0
        self.skipped: list[tuple[str, str]] = []
        self.run_ids: set[str] = set()
        self.t_embed0: float | None = None
        self.t_embed1: float | None = None
        self._buf: list[tuple[str, str, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        self._last_flush = time.perf_counter()

    # ---- the model and the writer, opened on first need ------------------------------
    def open_writer(self) -> None:
        """Get the encoder (building it from a factory) and open the cache for appending."""
        if self.writer is not None:
            return
        t0 = time.perf_counter()
        from medsae_desktop.core.cache import CacheWriter
        from medsae_desktop.core.encoders import ImageEncoder

        if isinstance(self._encoder_source, ImageEncoder):
            self.encoder = self._encoder_source
        else:
            self.encoder = self._encoder_source()
            self.owns_encoder = True
        info = self.encoder.info
        self.writer = CacheWriter(
            self.cache_path, embedding_dim=info.d_out, encoder=info.to_json(), dtype=self.dtype,
            label_names=self.label_names,
            patch_shape=(info.grid[0] * info.grid[1], info.d_out) if self.patches else None)
        self.known = self.writer.known_ids   # the same ids, now kept current by the writer
        if self.t_embed0 is not None:           # images/s measures embedding, not model loading
            self.t_embed0 += time.perf_counter() - t0

    def close(self) -> None:
        """Keep everything encoded, commit, release an encoder we built."""
        try:
            if self.writer is not None:
                try:
                    self.flush()
                finally:
                    self.writer.commit()
            else:
                self.memo.flush()
        finally:
            if self.owns_encoder and self.encoder is not None:
                self.encoder.close()

    # ---- per input -------------------------------------------------------------------
    def is_known(self, image_id: str) -> bool:
        return image_id in self.known

    def unreadable(self, item: _Item, exc: BaseException) -> None:
        if not isinstance(exc, MedsaeError):
            logger.warning("unexpected error reading %s", item.abs_path, exc_info=True)
        self.skipped.append((item.rel_path, _reason(exc)))
        self.done += 1

    def encode(self, batch: Sequence[tuple[_Item, str, np.ndarray]]) -> None:
        """Encode one batch and buffer its rows; close a segment when it is big or old."""
        self.open_writer()
        assert self.encoder is not None, "open_writer sets the encoder"
        d = self.encoder.info.d_out
        res = self.encoder.encode(np.stack([b[2] for b in batch]), patches=self.patches)
        emb_bd = res.embeddings_bd
        assert emb_bd.shape == (len(batch), d), \
            f"encoder returned {emb_bd.shape}, expected ({len(batch)}, {d})"
        if self.patches:
            assert res.patches_bpd is not None, "encoder returned no patch embeddings"
        for i, (item, image_id, _) in enumerate(batch):
            labels_c = None
            if self.label_names:
                if item.labels_c is None:
                    self.n_unlabelled += 1
                    labels_c = np.full(len(self.label_names), math.nan, np.float32)
                else:
                    labels_c = np.asarray(item.labels_c, np.float32)
            patches_pd = res.patches_bpd[i] if self.patches else None
            self._buf.append((image_id, item.rel_path, emb_bd[i], labels_c, patches_pd))
        self.n_new += len(batch)
        self.done += len(batch)
        self.t_embed1 = time.perf_counter()
        if (len(self._buf) >= self.segment_rows
                or self.t_embed1 - self._last_flush >= _SEGMENT_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one durable segment."""
        if self._buf:
            assert self.writer is not None, "rows are only buffered after open_writer"
            rows, self._buf = self._buf, []
            self.writer.add(
                [r[0] for r in rows], [r[1] for r in rows],
                np.stack([r[2] for r in rows]).astype(self.dtype),
                np.stack([r[3] for r in rows]) if self.label_names else None,
                np.stack([r[4] for r in rows]).astype(np.float16) if self.patches else None)
        self.memo.flush()   # any time is correct: hits are checked against the cache's ids
        self._last_flush = time.perf_counter()

    def progress(self, n_items: int, message: str) -> Progress:
        elapsed = (time.perf_counter() - self.t_embed0) if self.t_embed0 is not None else 0.0
        return Progress(self.done, n_items, message, {
            "images_per_s": self.n_new / elapsed if elapsed > 0 else 0.0,
            "new": float(self.n_new), "known": float(self.n_known),
            "duplicates": float(self.n_dup), "unreadable": float(len(self.skipped))})


def embed_job(
    input_path: str | os.PathLike[str],
    cache_path: str | os.PathLike[str],
    encoder: EncoderSource,
    *,
    labels_csv: str | os.PathLike[str] | None = None,
    patches: bool = False,
    batch_size: int = 32,
    dtype: str = "float32",
    segment_rows: int = 256,
    workers: int | None = None,
) -> Generator[Progress, None, EmbedResult]:
    """Embed a folder or CheXpert-style CSV of images into an HDF5 cache (resumable job).

    Parameters
    ----------
    input_path
        A folder (scanned recursively, see :func:`scan_image_folder`) or a CSV with a ``Path``
        column (paths relative to the CSV's folder, or CheXpert-style starting with that
        folder's name; see :func:`~medsae_desktop.core.labels.resolve_csv_path`). The CSV's
        label columns become ``/labels`` (−1 kept, blank → NaN). ``/paths`` holds the path
        relative to the folder, or the CSV's ``Path`` cell as written.
    cache_path
        The ``.h5`` cache; created when missing, appended to otherwise (same encoder required).
    encoder
        An :class:`~medsae_desktop.core.encoders.ImageEncoder` (the caller closes it), or a
        zero-argument factory returning one: then the model is built only if something new has
        to be embedded (a re-run over a complete cache never loads it, and so does not check
        the weights against the cache either; nothing can be mixed in) and closed at the end.
    labels_csv
        CheXpert-style CSV whose rows are matched to the inputs by path (see
        :meth:`~medsae_desktop.core.labels.LabelTable.match`); takes precedence over a CSV
        input's own label columns. Unmatched images get NaN labels.
    patches
        Also store ``/patch_embeddings`` (float16, (N, P, D)).
    batch_size
        Images per encoder call.
    dtype
        ``"float32"`` (default) or ``"float16"`` for ``/embeddings`` of a new cache.
    segment_rows
        Rows per durable segment file (also closed every 30 s): the most a kill -9 can lose.
    workers
        Decode threads (default: min(4, CPU count)).

    Yields
    ------
    Progress
        ``done``/``total`` count inputs; ``metrics`` has ``images_per_s``, ``new``, ``known``,
        ``duplicates`` and ``unreadable``.

    Returns
    -------
    EmbedResult

    Raises
    ------
    MedsaeError
        Missing input, nothing to scan, bad CSV, a cache built with another encoder or other
        label columns, encoder failure. Unreadable *images* never raise: they are skipped and
        listed in ``CACHE.h5.skipped.csv``.

    Notes
    -----
    Ids are content hashes (:func:`~medsae_desktop.core.images.image_content_hash`): an image
    already in the cache, or met earlier in the run, is not stored again whatever its path.
    Crash safety comes from :class:`~medsae_desktop.core.cache.CacheWriter`: rows go to
    atomic segment files and are merged at the end, also on Ctrl-C or generator close. After
    a kill -9 the next run commits the surviving segments and embeds only what is missing.
    """
    if batch_size < 1 or segment_rows < 1:
        raise ValueError(f"batch_size and segment_rows must be ≥ 1, got {batch_size}, "
                         f"{segment_rows}")
    if dtype not in EMBED_DTYPES:
        raise ValueError(f"dtype must be one of {EMBED_DTYPES}, got {dtype!r}")
    t_start = time.perf_counter()
    input_path, cache_path = Path(input_path), Path(cache_path)
    items, label_names = _collect_inputs(
        input_path, Path(labels_csv) if labels_csv is not None else None)
    n_items = len(items)
    yield Progress(0, n_items, f"found {n_items} images")

    run = _EmbedRun(cache_path, encoder, label_names=label_names, patches=patches, dtype=dtype,
                    segment_rows=segment_rows)
    n_workers = workers or max(1, min(4, os.cpu_count() or 1))
    _warm_up_decoders()
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="embed-decode")
    try:
        if run.has_pending_segments:
            yield run.progress(n_items, "loading the encoder to finish an interrupted run")
            run.open_writer()   # commits the segments a killed run left, whatever happens next
        # 1. Cheap pass: files the memo says are in the cache; the same file listed twice.
        todo: list[tuple[_Item, str | None]] = []
        seen_files: set[str] = set()
        for item in items:
            file_key = os.path.normcase(os.path.abspath(item.abs_path))
            if file_key in seen_files:
                run.n_dup += 1
                run.done += 1
                continue
            seen_files.add(file_key)
            key = run.memo.key(item.abs_path)
            known_id = run.memo.get(key)
            if known_id is not None and run.is_known(known_id):
                run.n_known += 1
                run.done += 1
                continue
            todo.append((item, key))
        if run.done:
            yield run.progress(n_items, f"{run.done} already in the cache")

        # 2. Decode ahead on the pool; hash-check, batch and encode in order on this thread.
        window = 2 * batch_size + n_workers
        pending: deque[tuple[_Item, str | None, Future[tuple[str, np.ndarray]]]] = deque()
        todo_iter = iter(todo)
        batch: list[tuple[_Item, str, np.ndarray]] = []
        last_yield = run.done
        run.t_embed0 = time.perf_counter()
        while True:
            while len(pending) < window:
                nxt = next(todo_iter, None)
                if nxt is None:
                    break
                pending.append((nxt[0], nxt[1], pool.submit(_decode, nxt[0].abs_path)))
            if not pending and not batch:
                break
            if pending:
                item, key, fut = pending.popleft()
                try:
                    image_id, pixels_chw = fut.result()
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
                    run.unreadable(item, exc)
                else:
                    run.memo.add(key, image_id)
                    if image_id in run.run_ids:
                        run.n_dup += 1
                        run.done += 1
                    elif run.is_known(image_id):
                        run.n_known += 1
                        run.done += 1
                    else:
                        run.run_ids.add(image_id)
                        batch.append((item, image_id, pixels_chw))
            if batch and (len(batch) >= batch_size or not pending):
                if run.writer is None:
                    yield run.progress(n_items, "loading the encoder")
                run.encode(batch)
                batch = []
                last_yield = run.done
                yield run.progress(n_items, f"embedded {run.n_new}")
            elif run.done - last_yield >= batch_size:
                last_yield = run.done   # keep the bar moving through skipped files
                yield run.progress(n_items, f"embedded {run.n_new}")
    finally:
        # Ctrl-C, close() and errors land here too: stop decoding, keep and commit what was
        # encoded, report what was unreadable.
        pool.shutdown(wait=True, cancel_futures=True)
        try:
            run.close()
        finally:
            _write_skipped(skipped_report_path(cache_path), run.skipped)

    n_total = 0
    if cache_path.exists():
        from medsae_desktop.core.cache import open_cache

        with open_cache(cache_path) as c:
            n_total = len(c)
    t_end = time.perf_counter()
    result = EmbedResult(
        cache_path=cache_path, n_inputs=n_items, n_new=run.n_new, n_known=run.n_known,
        n_duplicates=run.n_dup, n_unreadable=len(run.skipped), n_total=n_total,
        n_unlabelled=run.n_unlabelled, seconds=t_end - t_start,
        embed_seconds=(run.t_embed1 - run.t_embed0)
        if (run.t_embed0 is not None and run.t_embed1 is not None) else 0.0,
        skipped_report=skipped_report_path(cache_path) if run.skipped else None)
    yield run.progress(n_items, "done")
    return result
