"""HDF5 embedding cache (core/cache.py): layout, appends, resume, kill-safety, bad files."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from medsae_desktop.core.cache import (
    SCHEMA_VERSION,
    CacheWriter,
    EmbeddingCache,
    open_cache,
    wip_dir,
    write_cache,
)
from medsae_desktop.core.errors import MedsaeError

ENC_A = {"key": "demo", "weights_sha256": "a" * 64}
ENC_B = {"key": "demo", "weights_sha256": "b" * 64}
D = 8


def _rows(start: int, n: int, d: int = D) -> tuple[list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(start)
    x_nd = rng.standard_normal((n, d)).astype(np.float32)
    x_nd /= np.linalg.norm(x_nd, axis=1, keepdims=True)
    return [f"id{start + i:04d}" for i in range(n)], [f"img{start + i}.png" for i in
                                                     range(n)], x_nd


def _writer(path, **kw):
    kw.setdefault("embedding_dim", D)
    kw.setdefault("encoder", ENC_A)
    return CacheWriter(path, **kw)


def test_new_cache_layout_and_roundtrip(tmp_path):
    path = tmp_path / "c.h5"
    ids, paths, x_nd = _rows(0, 5)
    lab_nc = np.array([[1, 0], [-1, np.nan], [0, 0], [1, 1], [np.nan, np.nan]], np.float32)
    with _writer(path, label_names=["A", "B"]) as w:
        w.add(ids, paths, x_nd, lab_nc)
        assert w.n_pending == 1
    assert not wip_dir(path).exists()                       # committed and cleaned up
    with h5py.File(path) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 1
        assert f.attrs["embedding_dim"] == D
        assert json.loads(f.attrs["encoder"]) == ENC_A
        assert f["embeddings"].dtype == np.float32 and f["embeddings"].chunks is not None
        assert f["embeddings"].maxshape == (None, D)
    with open_cache(path) as c:
        assert len(c) == c.n == 5 and c.embedding_dim == D
        assert c.ids.tolist() == ids and c.paths.tolist() == paths
        np.testing.assert_array_equal(c.read_embeddings(), x_nd)
        np.testing.assert_array_equal(c.read_labels(), lab_nc)  # −1 and NaN survive
        assert c.label_names == ["A", "B"] and c.encoder == ENC_A
        assert not c.has_patches and c.row_of_id()["id0003"] == 3


def test_appends_skip_known_ids_and_dedup_on_commit(tmp_path):
    path = tmp_path / "c.h5"
    with _writer(path) as w:
        w.add(*_rows(0, 4))
    with _writer(path) as w:
        assert w.known_ids == {f"id{i:04d}" for i in range(4)}
        ids, paths, x_nd = _rows(2, 4)                      # id0002, id0003 already stored
        w.add(ids, paths, x_nd)
        w.add(ids[-1:], paths[-1:], x_nd[-1:])              # the same row in two segments
    with open_cache(path) as c:
        assert c.ids.tolist() == [f"id{i:04d}" for i in range(6)]


def test_chunked_reads(tmp_path):
    path = tmp_path / "c.h5"
    ids, paths, x_nd = _rows(0, 2500)
    write_cache(path, x_nd, ids=ids, paths=paths, encoder=ENC_A)
    with open_cache(path) as c:
        chunks = list(c.iter_chunks(chunk_rows=1000))
        assert [s for s, _ in chunks] == [0, 1000, 2000]
        assert [len(x) for _, x in chunks] == [1000, 1000, 500]
        np.testing.assert_array_equal(np.concatenate([x for _, x in chunks]), x_nd)
        np.testing.assert_array_equal(c.read_embeddings(10, 20), x_nd[10:20])
        rows = [2400, 3, 3, 1000, 0]
        np.testing.assert_array_equal(c.take_embeddings(rows), x_nd[rows])


def test_patches_and_float16(tmp_path):
    path = tmp_path / "c.h5"
    ids, paths, x_nd = _rows(0, 3)
    p_npd = np.random.default_rng(1).standard_normal((3, 4, D)).astype(np.float32)
    with _writer(path, dtype="float16", patch_shape=(4, D)) as w:
        w.add(ids, paths, x_nd, patches_npd=p_npd)
    with open_cache(path) as c:
        assert c.has_patches
        emb = c.read_embeddings()
        assert emb.dtype == np.float32                      # readers always give float32
        np.testing.assert_allclose(emb, x_nd, atol=1e-3)
        np.testing.assert_allclose(c.read_patches(), p_npd, atol=2e-3)
    with h5py.File(path) as f:
        assert f["embeddings"].dtype == np.float16 and f["patch_embeddings"].dtype == np.float16
    with pytest.raises(MedsaeError, match="pass --patches"):
        _writer(path)
    other = tmp_path / "other.h5"
    _writer(other).commit()                                 # a cache without patches
    with pytest.raises(MedsaeError, match="no patch embeddings"):
        _writer(other, patch_shape=(4, D))


def test_unlabelled_rows_in_labelled_cache_are_nan(tmp_path):
    path = tmp_path / "c.h5"
    with _writer(path, label_names=["A"]) as w:
        ids, paths, x_nd = _rows(0, 1)
        w.add(ids, paths, x_nd, np.array([[1.0]], np.float32))
    with _writer(path) as w:                                # no labels this time
        w.add(*_rows(1, 2))
    with open_cache(path) as c:
        y = c.read_labels()
        assert y[0, 0] == 1.0 and np.isnan(y[1:]).all()
    with pytest.raises(MedsaeError, match="labels differ"):
        _writer(path, label_names=["B"])


@pytest.mark.parametrize("kw, match", [
    (dict(encoder=ENC_B), "cache was built with encoder"),
    (dict(encoder={"key": "medclip-resnet", "weights_sha256": "a" * 64}),
     "cache was built with encoder 'demo'"),
    (dict(embedding_dim=D + 1), "holds 8-d embeddings"),
])
def test_encoder_mismatch_is_an_error(tmp_path, kw, match):
    path = tmp_path / "c.h5"
    with _writer(path) as w:
        w.add(*_rows(0, 2))
    with pytest.raises(MedsaeError, match=match) as ei:
        _writer(path, **kw)
    assert str(path) in str(ei.value)
    with open_cache(path) as c:                             # untouched
        assert len(c) == 2


def test_resume_from_segments_after_a_crash(tmp_path):
    path = tmp_path / "c.h5"
    w = _writer(path)
    w.add(*_rows(0, 3))
    w.add(*_rows(3, 3))
    del w                                                   # "crash": no commit
    with open_cache(path) as c:
        assert len(c) == 0                                  # committed state: empty but valid
    (wip_dir(path) / "seg-000009-deadbeef.tmp").write_bytes(b"half a segment")
    (wip_dir(path) / "seg-000008-0badf00d.h5").write_bytes(b"not hdf5 at all")
    w2 = _writer(path)
    assert w2.known_ids == {f"id{i:04d}" for i in range(6)}
    assert not list(wip_dir(path).glob("*.tmp"))            # torn segment discarded
    assert not (wip_dir(path) / "seg-000008-0badf00d.h5").exists()  # unreadable one dropped
    assert w2.commit() == 6
    with open_cache(path) as c:
        assert c.ids.tolist() == [f"id{i:04d}" for i in range(6)]
    assert not wip_dir(path).exists()


def test_exception_inside_the_block_still_commits(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(KeyboardInterrupt):
        with _writer(path) as w:
            w.add(*_rows(0, 2))
            raise KeyboardInterrupt
    with open_cache(path) as c:
        assert len(c) == 2


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from medsae_desktop.core.cache import CacheWriter
    def writer():
        return CacheWriter(sys.argv[1], embedding_dim=8,
                           encoder={"key": "demo", "weights_sha256": "a" * 64})
    w = writer()
    for k in range(100000):
        x = np.ones((50, 8), np.float32) / np.sqrt(8)
        w.add([f"id{k}-{i}" for i in range(50)], ["p"] * 50, x)
        if k % 5 == 4:
            w.commit()          # also get killed inside commits (file copy + rename)
            w = writer()        # like a new run
        print(k, flush=True)
""")


def test_kill_9_never_breaks_the_cache(tmp_path):
    path = tmp_path / "c.h5"
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Wait for some progress, then kill at a moment that varies per attempt.
        for _ in range(3 + 4 * attempt):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        time.sleep(0.01 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with open_cache(path) as c:                         # always opens
            committed = set(c.ids.tolist())
        w = _writer(path)
        total = w.commit()
        with open_cache(path) as c:
            ids = c.ids.tolist()
        assert len(ids) == len(set(ids)) == len(committed) + total
        assert len(ids) % 50 == 0 and len(ids) >= 50        # whole segments only
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(b"\x89HDF junk" * 10), "not a readable HDF5"),
    (lambda p: h5py.File(p, "w").close(), "no schema_version"),
    (lambda p: _h5(p, schema_version=SCHEMA_VERSION + 1), "newer than this program"),
    (lambda p: _h5(p, schema_version=1, drop="ids"), "dataset /ids is missing"),
    (lambda p: _h5(p, schema_version=1, short_paths=True), "/paths has 1 rows"),
])
def test_broken_files_give_one_line_errors(tmp_path, make, match):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(MedsaeError, match=match) as ei:
        EmbeddingCache(path)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(MedsaeError):
        _writer(path)


def test_missing_cache(tmp_path):
    with pytest.raises(MedsaeError, match="embedding cache not found"):
        open_cache(tmp_path / "none.h5")


def _h5(path, *, schema_version, drop=None, short_paths=False):
    ids, paths, x_nd = _rows(0, 3)
    write_cache(path, x_nd, ids=ids, paths=paths, encoder=ENC_A)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = schema_version
        if drop:
            del f[drop]
        if short_paths:
            f["paths"].resize(1, axis=0)


def test_stale_segments_of_another_encoder_are_not_merged(tmp_path):
    path = tmp_path / "c.h5"
    w = _writer(path, encoder=ENC_A)
    w.add(*_rows(0, 2))
    del w                                                   # killed, segments left behind
    path.unlink()                                           # user deletes the "broken" cache
    with pytest.raises(MedsaeError, match="pending segments .* delete that folder"):
        _writer(path, encoder=ENC_B)                        # ... and starts over with B
    assert len(list(wip_dir(path).glob("seg-*.h5"))) == 1, "A's pending work must not be lost"
    with _writer(path, encoder=ENC_A) as w:                 # the original encoder finishes it
        pass
    with open_cache(path) as c:
        assert len(c) == 2


def test_add_after_commit(tmp_path):
    path = tmp_path / "c.h5"
    w = _writer(path)
    w.add(*_rows(0, 1))
    w.commit()
    w.add(*_rows(1, 1))
    assert w.commit() == 1
