"""``medsae train`` end to end: real processes, real files, kill -9 and --resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("torch")

from medsae_desktop.core.cache import write_cache  # noqa: E402
from medsae_desktop.core.sae import load_sae  # noqa: E402
from medsae_desktop.core.sae.synthetic import make_dictionary_data  # noqa: E402


def medsae(*args, **kw):
    return subprocess.run([sys.executable, "-m", "medsae_desktop", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    x, _ = make_dictionary_data(1500, 16, 40, 3, seed=2)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("cli") / "c.h5"
    write_cache(path, x, dtype="float16", encoder={"key": "demo"})
    return path


SMALL = ["--expansion", "4", "--batch-size", "64", "--lr", "1e-3"]


def test_train_writes_valid_checkpoint_and_table(cache, tmp_path):
    r = medsae("train", cache, "-o", tmp_path / "sae", "--arch", "topk", "--k", "4",
               "--steps", "60", *SMALL)
    assert r.returncode == 0, r.stderr
    for col in ("MSE", "FVU", "L0", "dead %", "dense %", "time s", "samples/s"):
        assert col in r.stdout
    sae = load_sae(tmp_path / "sae")
    assert sae.cfg["complete"] and sae.arch == "topk" and sae.d_sae == 64
    log = (tmp_path / "sae" / "train_log.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["final"]["l0"] == pytest.approx(4.0)


def test_kill9_then_resume_matches_uninterrupted(cache, tmp_path):
    args = ["--arch", "relu", "--l1", "0.05", "--steps", "800", "--checkpoint-every", "100",
            *SMALL]
    # Reference: the same run uninterrupted, in-process (same core code as the command).
    from medsae_desktop.core.progress import run_job
    from medsae_desktop.core.sae.config import TrainConfig
    from medsae_desktop.core.sae.train import train_job

    cfg = TrainConfig(arch="relu", l1=0.05, steps=800, checkpoint_every=100, expansion=4,
                      batch_size=64, lr=1e-3)
    run_job(train_job(cache, tmp_path / "ref", cfg))
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "medsae_desktop", "train", str(cache),
                             "-o", str(out), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((out / "resume").glob("state-000000200.*")):
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert json.loads((out / "cfg.json").read_text())["complete"] is False
    r = medsae("train", cache, "-o", out, "--resume")  # settings come from the stored run
    assert r.returncode == 0, r.stderr
    assert load_sae(out).sae_id == load_sae(tmp_path / "ref").sae_id


def test_sweep_trains_each_value(cache, tmp_path):
    r = medsae("train", cache, "-o", tmp_path / "grid", "--arch", "topk", "--steps", "20",
               "--sweep", "k=2,4", *SMALL)
    assert r.returncode == 0, r.stderr
    assert load_sae(tmp_path / "grid" / "k=2").k == 2
    assert load_sae(tmp_path / "grid" / "k=4").k == 4
    assert "k=2" in r.stdout and "k=4" in r.stdout


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "s"
    r = medsae("train", cache, "-o", out, "--arch", "topk", "--k", "2", "--steps", "5", *SMALL)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("extra, code, words", [
    (["--resume", "--lr", "0.5"], 2, "differ"),
    (["--resume"], 1, "already complete"),
    (["--steps", "5"], 2, "already holds"),
    (["--sweep", "bogus=1"], 2, "bad --sweep"),
])
def test_errors_are_one_line(cache, trained, extra, code, words):
    r = medsae("train", cache, "-o", trained, "--arch", "topk", "--k", "2", *extra)
    assert r.returncode == code
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_missing_cache_exit_1(tmp_path):
    r = medsae("train", tmp_path / "nope.h5", "-o", tmp_path / "s")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "nope.h5" in r.stderr
