"""``medsae eval``, ``medsae name`` and ``medsae score-names`` on real files (offline)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from medsae_desktop.cli import main
from medsae_desktop.core.cache import write_cache
from medsae_desktop.core.sae import save_sae

LABELS = ["Cardiomegaly", "Pleural Effusion", "Support Devices"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Images, a labelled cache of their (synthetic) embeddings, a small SAE."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("evalcli")
    rng = np.random.default_rng(1)
    n, d, k = 240, 16, 48
    y = (rng.random((n, 3)) < 0.35).astype(np.float32)
    dirs = rng.normal(size=(3, d)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32) + 1.5 * (y @ dirs)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    (tmp / "imgs").mkdir()
    paths = []
    for i in range(n):
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(
            tmp / "imgs" / f"{i}.png")
        paths.append(f"imgs/{i}.png")
    lab = y.copy()
    lab[rng.random((n, 3)) < 0.05] = -1
    cache = write_cache(tmp / "c.h5", x, paths=paths, labels_nc=lab, label_names=LABELS)
    w = rng.normal(size=(k, d)).astype(np.float32)
    w[:3] = dirs
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    sae = save_sae(tmp / "sae", {"W_enc": w.T.copy(), "b_enc": np.full(k, -0.5, np.float32),
                                 "W_dec": w, "b_dec": np.zeros(d, np.float32),
                                 "input_mean": x.mean(0)},
                   {"arch": "relu", "d_in": d, "d_sae": k, "input_scale": 3.0})
    return {"tmp": tmp, "cache": str(cache), "sae": str(sae)}


def test_eval_sae_and_raw_with_comparison(files, capsys):
    tmp, cache = files["tmp"], files["cache"]
    assert main(["eval", cache, "--raw", "-o", str(tmp / "rep_raw")]) == 0
    assert main(["eval", cache, "--sae", files["sae"], "-o", str(tmp / "rep"),
                 "--compare", str(tmp / "rep_raw"), "--uncertain", "ignore"]) == 0
    out = capsys.readouterr().out
    assert "more monosemantic" in out and "mean monosemanticity score" in out
    assert "different uncertainty policies" in out  # the raw report used zeros
    for name in ("summary.json", "units.csv", "correlation.csv", "report.html", "heatmap.png",
                 "entropy_hist.png", "frequency_hist.png", "comparison.json"):
        assert (tmp / "rep" / name).is_file(), name
    s = json.loads((tmp / "rep" / "summary.json").read_text())
    assert s["kind"] == "sae" and s["config"]["uncertain"] == "ignore"
    assert s["reconstruction"]["fvu"] is not None
    with open(tmp / "rep" / "units.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and rows[0]["best_label"] in LABELS


def test_eval_balanced(files, capsys):
    tmp = files["tmp"]
    assert main(["eval", files["cache"], "--raw", "-o", str(tmp / "rep_bal"), "--balanced", "10",
                 "--no-figures", "--no-f1"]) == 0
    s = json.loads((tmp / "rep_bal" / "summary.json").read_text())
    assert s["n_images"] < 240 and s["config"]["balanced"] == 10
    assert not (tmp / "rep_bal" / "report.html").exists()


def test_eval_errors(files, capsys, tmp_path):
    assert main(["eval", str(tmp_path / "missing.h5"), "--raw", "-o", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.h5" in err
    assert main(["eval", files["cache"], "--raw", "-o", str(tmp_path / "r"),
                 "--balanced", "0"]) == 2
    assert main(["eval", files["cache"], "--raw", "-o", str(tmp_path / "r"),
                 "--compare", str(tmp_path / "nope")]) == 1
    assert "report folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", files["cache"], "--raw", "--sae", files["sae"], "-o", "x"])
    assert exc.value.code == 2


def test_eval_bad_cache_subprocess(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "-m", "medsae_desktop", "eval", str(bad), "--raw",
                        "-o", str(tmp_path / "r")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0 and "bad.h5" in p.stderr
    assert "Traceback" not in p.stderr


def test_name_labels(files, capsys):
    tmp = files["tmp"]
    out = tmp / "names_labels.csv"
    assert main(["name", files["cache"], "--sae", files["sae"], "--namer", "labels",
                 "-o", str(out)]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["unit", "concept", "description", "namer", "score"]
    by_unit = {int(r["unit"]): r for r in rows}
    assert [by_unit[u]["concept"] for u in range(3)] == LABELS
    assert main(["name", files["cache"], "--sae", files["sae"], "--namer", "medgemma",
                 "-o", str(out)]) == 2  # --medgemma missing
    assert main(["name", files["cache"], "--sae", files["sae"], "--namer", "labels",
                 "--units", "x", "-o", str(out)]) == 2


def test_name_and_score_with_tiny_medgemma(files, capsys, tmp_path):
    pytest.importorskip("transformers")
    from medsae_desktop.core.naming.tiny_gemma import build_tiny_gemma3

    tiny = build_tiny_gemma3(tmp_path / "tiny")
    names = tmp_path / "names.csv"
    common = ["--medgemma", str(tiny), "--device", "cpu", "--images-root", str(files["tmp"])]
    assert main(["name", files["cache"], "--sae", files["sae"], "--namer", "medgemma",
                 "-o", str(names), "--max-units", "2", "--min-active", "20",
                 "--max-new-tokens", "3", *common]) == 0
    out = capsys.readouterr().out
    assert "2 names (medgemma" in out and "raw answers:" in out
    with open(names) as fh:
        named = list(csv.DictReader(fh))
    assert [r["namer"] for r in named] == ["medgemma", "medgemma"]
    if all(r["concept"] == "unparsed" for r in named):  # what a random model usually gives
        assert main(["score-names", files["cache"], "--sae", files["sae"], "--names", str(names),
                     "-o", str(tmp_path / "s0.csv"), *common]) == 1
        assert "no usable name" in capsys.readouterr().err
    hand = tmp_path / "hand.csv"
    hand.write_text("unit,concept,description,namer,score\n0,big heart,cardiomegaly,manual,\n"
                    "1,fluid,effusion,manual,\n")
    assert main(["score-names", files["cache"], "--sae", files["sae"], "--names", str(hand),
                 "-o", str(tmp_path / "scores.csv"), "--per-side", "3", "--max-new-tokens", "3",
                 *common]) == 0
    assert "shuffled" in capsys.readouterr().out
    assert (tmp_path / "scores.png").is_file()
    with open(tmp_path / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["condition"], r["unit"]) for r in rows] == [
        ("sae", "0"), ("sae", "1"), ("shuffled", "0"), ("shuffled", "1")]
    assert all(int(r["n_images"]) == 6 for r in rows)
