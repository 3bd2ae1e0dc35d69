"""embed_job: inputs, labels, content-hash dedup, skipped report, resume, cancel, memo."""

import csv
import os
import shutil

import numpy as np
import pytest

from medsae_desktop.core import pipeline
from medsae_desktop.core.cache import open_cache
from medsae_desktop.core.encoders.base import EncodeResult, EncoderInfo, ImageEncoder
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.images import image_content_hash, read_image
from medsae_desktop.core.labels import CHEXPERT_LABELS, read_label_csv
from medsae_desktop.core.phantoms import PhantomConfig, make_phantom, write_phantoms
from medsae_desktop.core.pipeline import embed_job, scan_image_folder, skipped_report_path
from medsae_desktop.core.progress import run_job

N = 6


class TinyEncoder(ImageEncoder):
    """Fast stand-in for MedCLIP: a fixed projection of 2×2-cell pooled pixels (d = 16)."""

    def __init__(self, sha: str = "f" * 64, fail_on_call: int | None = None) -> None:
        self.info = EncoderInfo(key="demo", variant="resnet50", backend="torch",
                                weights_sha256=sha, label="tiny test encoder", d_out=16,
                                grid=(2, 2))
        self._w = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
        self.calls = 0
        self.closed = False
        self.fail_on_call = fail_on_call

    def _encode(self, pixels_bchw: np.ndarray, patches: bool) -> EncodeResult:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        b = len(pixels_bchw)
        x = pixels_bchw[:, 0].reshape(b, 8, 28, 8, 28).mean(axis=(2, 4)).reshape(b, 64)
        e = x @ self._w
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        p = np.repeat(e[:, None, :], 4, axis=1) if patches else None
        return EncodeResult(e.astype(np.float32), p)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def phantom_dir(tmp_path):
    d = tmp_path / "ph"
    run_job(write_phantoms(d, N, seed=0, config=PhantomConfig(size=128)))
    return d


def _add_bad_files(d):
    (d / "x.dcm").write_bytes(os.urandom(400))
    (d / "y.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(b"ignored")


def _read_report(cache_path):
    with open(skipped_report_path(cache_path), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_folder_with_labels_bad_files_and_duplicates(tmp_path, phantom_dir):
    _add_bad_files(phantom_dir)
    (phantom_dir / "sub").mkdir()
    shutil.copy(phantom_dir / "phantom_00000.png", phantom_dir / "sub" / "dup.png")
    cache = tmp_path / "c.h5"
    reports = []
    enc = TinyEncoder()
    res = run_job(embed_job(phantom_dir, cache, enc, labels_csv=phantom_dir / "labels.csv",
                            batch_size=4), reports.append)
    assert not enc.closed                                    # the caller's encoder stays open
    assert (res.n_inputs, res.n_new, res.n_duplicates, res.n_unreadable, res.n_total) == \
        (N + 3, N, 1, 2, N)
    assert res.n_known == 0 and res.n_unlabelled == 0 and res.images_per_s > 0
    assert reports[-1].done == reports[-1].total == N + 3
    assert {"images_per_s", "new", "known", "unreadable"} <= set(reports[-1].metrics)
    report = _read_report(cache)
    assert res.skipped_report == skipped_report_path(cache)
    assert [r["path"] for r in report] == ["x.dcm", "y.png"]
    assert all(r["reason"] and "\n" not in r["reason"] for r in report)
    assert "empty" in report[1]["reason"]
    table = read_label_csv(phantom_dir / "labels.csv")
    with open_cache(cache) as c:
        assert c.paths.tolist() == [f"phantom_{i:05d}.png" for i in range(N)]  # sorted scan
        assert c.label_names == list(CHEXPERT_LABELS)
        np.testing.assert_array_equal(c.read_labels(), table.values_nc)      # blanks = NaN
        for i, (path, image_id) in enumerate(zip(c.paths, c.ids)):
            assert image_id == image_content_hash(read_image(phantom_dir / path))
        assert c.encoder["weights_sha256"] == "f" * 64
        assert c.read_embeddings().dtype == np.float32


def test_scan_is_sorted_recursive_and_skips_hidden(tmp_path):
    for rel in ["b/2.png", "a.dcm", "b/1.PNG", ".git/x.png", "c/.x.png", "c/readme.md"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert scan_image_folder(tmp_path) == ["a.dcm", "b/1.PNG", "b/2.png"]


def test_rerun_does_nothing_and_never_loads_the_model(tmp_path, phantom_dir):
    cache = tmp_path / "c.h5"
    run_job(embed_job(phantom_dir, cache, TinyEncoder()))
    built = []

    def factory():
        built.append(TinyEncoder())
        return built[-1]

    res = run_job(embed_job(phantom_dir, cache, factory))
    assert (res.n_new, res.n_known, res.n_total) == (0, N, N)
    assert built == []
    # With something new, the factory's encoder is built once and closed by the job.
    from medsae_desktop.core.images import save_png

    save_png(make_phantom(99, config=PhantomConfig(size=128)).image_hw, phantom_dir / "new.png")
    res = run_job(embed_job(phantom_dir, cache, factory))
    assert (res.n_new, res.n_known, res.n_total) == (1, N, N + 1)
    assert len(built) == 1 and built[0].closed


def test_memo_skips_decoding_but_not_changed_files(tmp_path, phantom_dir, monkeypatch):
    monkeypatch.setattr(pipeline, "_RACY_S", -3600.0)   # trust even just-written timestamps
    decoded = []
    real_decode = pipeline._decode
    monkeypatch.setattr(pipeline, "_decode", lambda p: (decoded.append(p), real_decode(p))[1])
    _add_bad_files(phantom_dir)
    cache = tmp_path / "c.h5"
    run_job(embed_job(phantom_dir, cache, TinyEncoder()))
    assert len(decoded) == N + 2
    decoded.clear()
    res = run_job(embed_job(phantom_dir, cache, TinyEncoder()))
    assert res.n_known == N and res.n_new == 0
    assert sorted(p.name for p in decoded) == ["x.dcm", "y.png"]  # unreadable: always retried
    # Overwrite an image with other pixels but the old mtime: ctime still changes.
    target = phantom_dir / "phantom_00001.png"
    st = os.stat(target)
    from medsae_desktop.core.images import save_png

    save_png(make_phantom(42, config=PhantomConfig(size=128)).image_hw, target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    decoded.clear()
    res = run_job(embed_job(phantom_dir, cache, TinyEncoder()))
    assert res.n_new == 1 and res.n_total == N + 1
    assert target in decoded


def test_chexpert_csv_input(tmp_path, phantom_dir):
    ds = tmp_path / "CheXpert-v1.0-small"
    for i in range(3):
        d = ds / "train" / f"patient{i:05d}" / "study1"
        d.mkdir(parents=True)
        shutil.copy(phantom_dir / f"phantom_{i:05d}.png", d / "view1_frontal.png")
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    rows = []
    for i, values in enumerate([["1.0"] + [""] * 13,
                                ["", "", "-1.0", "1.0"] + [""] * 9 + ["1.0"],
                                ["0.0"] * 14,
                                ["1.0"] + [""] * 13]):
        rows.append([f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.png",
                     "Female", "50", "Frontal", "PA", *values])
    csv_path = ds / "train.csv"
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    cache = tmp_path / "c.h5"
    res = run_job(embed_job(csv_path, cache, TinyEncoder()))
    assert (res.n_inputs, res.n_new, res.n_unreadable) == (4, 3, 1)  # row 4: file missing
    assert "patient00003" in _read_report(cache)[0]["path"]
    with open_cache(cache) as c:
        assert c.paths.tolist() == [r[0] for r in rows[:3]]      # the Path cells, as written
        y = c.read_labels()
        assert c.label_names == list(CHEXPERT_LABELS)
        assert y[0, 0] == 1.0 and np.isnan(y[0, 1:]).all()
        assert y[1, 2] == -1.0 and y[1, 3] == 1.0 and y[1, 13] == 1.0   # uncertain kept
        assert (y[2] == 0).all()


def test_close_and_ctrl_c_keep_embedded_rows(tmp_path, phantom_dir):
    cache = tmp_path / "c.h5"
    job = embed_job(phantom_dir, cache, TinyEncoder(), batch_size=2, segment_rows=100)
    for p in job:
        if p.metrics.get("new", 0) >= 2:
            break
    job.close()                                              # UI cancel
    with open_cache(cache) as c:
        n_kept = len(c)
    assert 2 <= n_kept < N
    with pytest.raises(KeyboardInterrupt):                  # Ctrl-C during the 2nd encode
        run_job(embed_job(phantom_dir, cache, TinyEncoder(fail_on_call=2), batch_size=1))
    with open_cache(cache) as c:
        assert len(c) == n_kept + 1
    res = run_job(embed_job(phantom_dir, cache, TinyEncoder()))
    assert res.n_new == N - n_kept - 1 and res.n_known == n_kept + 1 and res.n_total == N


def test_patches_and_float16(tmp_path, phantom_dir):
    cache = tmp_path / "c.h5"
    run_job(embed_job(phantom_dir, cache, TinyEncoder(), patches=True, dtype="float16"))
    with open_cache(cache) as c:
        assert c.read_patches().shape == (N, 4, 16)
        assert c._f["embeddings"].dtype == np.float16
        assert not c.has_labels


def test_other_encoder_is_refused(tmp_path, phantom_dir):
    cache = tmp_path / "c.h5"
    run_job(embed_job(phantom_dir, cache, TinyEncoder(sha="a" * 64)))
    from medsae_desktop.core.images import save_png

    save_png(make_phantom(77, config=PhantomConfig(size=128)).image_hw, phantom_dir / "n.png")
    with pytest.raises(MedsaeError, match="cache was built with encoder"):
        run_job(embed_job(phantom_dir, cache, TinyEncoder(sha="b" * 64)))
    with open_cache(cache) as c:
        assert len(c) == N


def test_nothing_readable(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    _add_bad_files(d)
    cache = tmp_path / "c.h5"
    res = run_job(embed_job(d, cache, TinyEncoder()))
    assert res.n_unreadable == res.n_inputs == 2 and res.n_total == 0
    assert not cache.exists()                                # no empty cache left behind
    assert len(_read_report(cache)) == 2


def test_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsaeError, match="no images found"):
        run_job(embed_job(tmp_path / "empty", tmp_path / "c.h5", TinyEncoder()))
    with pytest.raises(MedsaeError, match="input not found"):
        run_job(embed_job(tmp_path / "nope", tmp_path / "c.h5", TinyEncoder()))
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(MedsaeError, match="folder of images or a CSV"):
        run_job(embed_job(tmp_path / "list.txt", tmp_path / "c.h5", TinyEncoder()))
    assert not (tmp_path / "c.h5").exists()
