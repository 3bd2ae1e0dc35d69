"""End-to-end: ``medsae phantoms`` and ``medsae embed`` with the demo encoder, as a user runs them.

Real subprocesses (exit codes, stdout summary, stderr), real files, a real kill -9. The demo
encoder is a full ResNet-50, so image counts are kept small; the whole module takes about a
minute on two CPU cores.
"""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medsae_desktop.core.cache import open_cache, wip_dir
from medsae_desktop.core.labels import CHEXPERT_LABELS, read_label_csv

SUMMARY = re.compile(r"embedded (\d+) new, (\d+) already in cache.*?(\d+) unreadable; "
                     r"(\S+) holds (\d+) images")


def medsae(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsae_desktop", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def summary(stdout: str) -> tuple[int, int, int, int]:
    """(new, known, unreadable, total) from the one-line summary."""
    m = SUMMARY.search(stdout)
    assert m, stdout
    return int(m[1]), int(m[2]), int(m[3]), int(m[5])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("embed_e2e")
    r = medsae("phantoms", "-o", "ph", "-n", "40", cwd=d)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and "wrote 40 phantoms" in r.stdout
    (d / "ph" / "x.dcm").write_bytes(np.random.default_rng(0).bytes(2048))  # random bytes
    (d / "ph" / "y.png").write_bytes(b"")                                   # zero bytes
    return d


@pytest.fixture(scope="module")
def first_run(work) -> subprocess.CompletedProcess:
    r = medsae("embed", "ph", "-o", "c.h5", "--encoder", "demo", "--labels", "ph/labels.csv",
               cwd=work)
    return r


def test_phantoms_and_embed(work, first_run):
    r = first_run
    assert r.returncode == 0, r.stderr
    new, known, unreadable, total = summary(r.stdout)
    assert (new, known, unreadable, total) == (40, 0, 2, 40)
    assert "c.h5.skipped.csv" in r.stdout
    with open(work / "c.h5.skipped.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(row["path"] for row in rows) == ["x.dcm", "y.png"]
    table = read_label_csv(work / "ph" / "labels.csv")
    with open_cache(work / "c.h5") as c:
        assert len(c) == 40 and c.embedding_dim == 512
        assert c.encoder["key"] == "demo" and "untrained demo weights" in c.encoder["label"]
        assert c.label_names == list(CHEXPERT_LABELS)
        assert c.paths.tolist() == list(table.paths)
        np.testing.assert_array_equal(c.read_labels(), table.values_nc)
        e = c.read_embeddings()
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
        assert len(set(c.ids.tolist())) == 40


def test_second_run_does_nothing(work, first_run):
    assert first_run.returncode == 0
    t0 = time.perf_counter()
    r = medsae("embed", "ph", "-o", "c.h5", "--encoder", "demo", "--labels", "ph/labels.csv",
               cwd=work)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout) == (0, 40, 2, 40)
    assert elapsed < 30, f"a no-op re-run took {elapsed:.1f} s"  # the model is never loaded


def test_csv_input_with_uncertain_and_blank_labels(work, first_run):
    assert first_run.returncode == 0
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    values = [["1.0"] + [""] * 13,
              ["", "", "-1.0", "1.0", "", "-1.0"] + [""] * 7 + ["1.0"],
              ["0.0"] * 14]
    with open(work / "ph" / "subset.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, v in enumerate(values):
            w.writerow([f"phantom_{i:05d}.png", "Male", "40", "Frontal", "PA", *v])
    r = medsae("embed", "ph/subset.csv", "-o", "sub.h5", "--encoder", "demo", cwd=work)
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout) == (3, 0, 0, 3)
    with open_cache(work / "sub.h5") as c, open_cache(work / "c.h5") as full:
        y = c.read_labels()
        assert y[1, 2] == -1.0 and y[1, 5] == -1.0 and y[1, 13] == 1.0
        assert np.isnan(y[0, 1:]).all() and (y[2] == 0).all()
        # Same pixels, same encoder: the same ids and embeddings as the folder run.
        rows = full.row_of_id()
        idx = [rows[i] for i in c.ids]
        assert idx == [0, 1, 2]
        np.testing.assert_allclose(c.read_embeddings(), full.read_embeddings(0, 3), atol=1e-5)


def test_errors_exit_1_with_one_line(work):
    r = medsae("embed", "nope", "-o", "z.h5", "--encoder", "demo", cwd=work)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "nope: input not found" in r.stderr
    bad = work / "bad"
    bad.mkdir()
    (bad / "x.dcm").write_bytes(b"\x00" * 300)
    r = medsae("embed", "bad", "-o", "z.h5", "--encoder", "demo", cwd=work)
    assert r.returncode == 1, r.stdout
    assert "none of the 1 images could be read" in r.stderr
    assert not (work / "z.h5").exists() and (work / "z.h5.skipped.csv").exists()


def test_kill_9_midway_then_rerun_embeds_only_the_rest(tmp_path):
    r = medsae("phantoms", "-o", "ph", "-n", "60", "--seed", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cache = tmp_path / "k.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "medsae_desktop", "embed", "ph", "-o", "k.h5", "--encoder",
         "demo", "--batch-size", "2", "--segment-rows", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while not list(wip_dir(cache).glob("seg-*.h5")):
            assert proc.poll() is None, f"embed ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "no segment appeared"
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.skip("the machine embedded all 60 images before the kill")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with open_cache(cache) as c:                             # the committed file still opens
        n_committed = len(c)
    in_segments = set()
    for seg in wip_dir(cache).glob("seg-*.h5"):
        with open_cache(seg) as s:
            in_segments.update(s.ids.tolist())
    n_saved = n_committed + len(in_segments)
    assert 0 < n_saved < 60

    r = medsae("embed", "ph", "-o", "k.h5", "--encoder", "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    new, known, unreadable, total = summary(r.stdout)
    assert (new, known, unreadable, total) == (60 - n_saved, n_saved, 0, 60)
    assert not wip_dir(cache).exists()
    with open_cache(cache) as c:
        assert len(set(c.ids.tolist())) == 60
        assert sorted(c.paths.tolist()) == [f"phantom_{i:05d}.png" for i in range(60)]
