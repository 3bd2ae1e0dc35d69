"""Namers without MedGemma: names CSV, labels and vocab namers, MedCLIP text tower, answer
parsing, image selection, resumable progress files."""

import json
import math

import numpy as np
import pytest

from medsae_desktop.core.cache import EmbeddingCache, write_cache
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.naming import (
    UNPARSED, FeatureName, NameConfig, name_by_labels, name_by_vocab, name_units_job,
    read_names_csv, read_terms, write_names_csv)
from medsae_desktop.core.naming.medgemma import parse_binary_answer, parse_name_answer
from medsae_desktop.core.naming.progress_log import ProgressLog, answers_path, progress_path
from medsae_desktop.core.naming.selection import (
    collect_unit_rows_job, naming_rows, scoring_rows)
from medsae_desktop.core.progress import run_job


def test_names_csv_roundtrip(tmp_path):
    names = [FeatureName(3, "left effusion", "fluid, with\nnewline", "medgemma"),
             FeatureName(7, "Cardiomegaly", "rho", "labels", 0.61234567)]
    p = write_names_csv(tmp_path / "n.csv", names)
    assert p.read_text().splitlines()[0] == "unit,concept,description,namer,score"
    back = read_names_csv(p)
    assert back[0].unit == 3 and back[0].description == "fluid, with newline"
    assert math.isnan(back[0].score) and back[1].score == pytest.approx(0.612346)
    (tmp_path / "bad.csv").write_text("unit,concept\nx,y\n")
    with pytest.raises(MedsaeError, match="not an integer"):
        read_names_csv(tmp_path / "bad.csv")
    (tmp_path / "nocol.csv").write_text("neuron,name\n1,y\n")
    with pytest.raises(MedsaeError, match="'unit' and 'concept'"):
        read_names_csv(tmp_path / "nocol.csv")


def test_label_namer():
    corr = np.array([[0.1, 0.7, 0.3], [-0.2, -0.1, -0.3], [np.nan, 0.0, 0.0]])
    out = name_by_labels(corr, ["A", "B", "C"])
    assert out[0].concept == "B" and out[0].score == pytest.approx(0.7)
    assert "next C" in out[0].description and out[0].namer == "labels"
    assert out[1].concept == "" and out[2].concept == ""
    assert [n.unit for n in name_by_labels(corr, ["A", "B", "C"], units=[2, 0])] == [2, 0]


def test_vocab_namer_finds_planted_terms(rng):
    terms = ["effusion", "pacemaker", "nodule", "edema"]
    t = rng.normal(size=(4, 12))
    d = np.stack([t[2] * 3.0, t[0] + 0.05 * rng.normal(size=12), -t[1]])
    out = name_by_vocab(d, t, terms)
    assert [n.concept for n in out[:2]] == ["nodule", "effusion"]
    assert out[0].score == pytest.approx(1.0) and out[2].concept != "pacemaker"
    with pytest.raises(MedsaeError, match="different encoder"):
        name_by_vocab(d[:, :5], t, terms)


def test_read_terms(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("# comment\nnodule\n\n effusion \nnodule\n")
    assert read_terms(p) == ["nodule", "effusion"]
    (tmp_path / "e.txt").write_text("# only a comment\n")
    with pytest.raises(MedsaeError):
        read_terms(tmp_path / "e.txt")


@pytest.mark.parametrize("text, concept, desc", [
    ('{"concept": "Left pleural effusion", "description": "fluid"}', "Left pleural effusion",
     "fluid"),
    ('Sure!\n```json\n{"concept": "ET tube", "description": "tube tip"}\n```\nHope it helps',
     "ET tube", "tube tip"),
    ("{'concept': 'Cardiomegaly', 'description': 'big heart',}", "Cardiomegaly", "big heart"),
    ('{"Concept": "Nodules"}', "Nodules", ""),
    ('{"concepts": ["a", "b"], "description": "x"}', "a, b", "x"),
    ('```json\n{"concept": "Truncated answer", "description": "cut of', "Truncated answer", ""),
    ('concept: Pneumothorax on the right\ndescription: air', "Pneumothorax on the right", "air"),
])
def test_parse_name_answer_tolerant(text, concept, desc):
    p = parse_name_answer(text)
    assert p.ok and p.concept == concept and p.raw == text
    if desc:
        assert p.description.startswith(desc)


@pytest.mark.parametrize("text", ["", "ZZZZZZZZ", "\ufffd\ufffd{", '{"description": "no concept"}',
                                  "[1, 0, 1]", "{{{{", "```\n```"])
def test_parse_name_answer_garbage(text):
    p = parse_name_answer(text)
    assert not p.ok and p.concept == UNPARSED and p.description == "" and p.raw == text


def test_parse_binary_answer():
    assert parse_binary_answer("[1, 0, 1, 1, 0]", 5) == ([1, 0, 1, 1, 0], True)
    assert parse_binary_answer("```python\n[0,0,1,0,1]\n```", 5) == ([0, 0, 1, 0, 1], True)
    assert parse_binary_answer("Answer: ['1', '0', '0', '1', '1'] done", 5)[1]
    assert parse_binary_answer("[1, 0]", 5) == ([0] * 5, False)
    assert parse_binary_answer("garbage", 3) == ([0, 0, 0], False)
    assert parse_binary_answer("[2, 1, 0]", 3) == ([0, 0, 0], False)
    assert parse_binary_answer("[1, 0] then [1, 1, 0]", 3) == ([1, 1, 0], True)


@pytest.fixture
def acts_cache(tmp_path, rng):
    """Raw 'units' = cache columns with known activation patterns."""
    n = 200
    x = np.zeros((n, 4), np.float32)
    x[:, 0] = rng.random(n)                      # active everywhere
    x[:150, 1] = np.linspace(1, 2, 150)          # active on 150, known order
    x[:10, 2] = np.arange(10, 0, -1)             # active on 10 only
    x[:, 3] = 0                                  # dead
    cache = write_cache(tmp_path / "a.h5", x)
    return cache, x


def test_collect_rows_matches_brute_force(acts_cache):
    cache, x = acts_cache
    with EmbeddingCache(cache) as c:
        rows = run_job(collect_unit_rows_job(c, lambda e: e, [0, 1, 2, 3], n_top=20,
                                             n_inactive=30, chunk_rows=37))
    for i, u in enumerate([0, 1, 2, 3]):
        want = np.argsort(-x[:, u], kind="stable")[:20]
        got = rows.top_rows_um[i]
        np.testing.assert_allclose(x[got[got >= 0], u], x[want, u])
        assert rows.n_active_u[i] == int((x[:, u] > 1e-7).sum())
        inact = rows.inactive_rows_ur[i]
        inact = inact[inact >= 0]
        assert len(set(inact.tolist())) == inact.size
        assert (x[inact, u] <= 1e-7).all()
        assert inact.size == min(30, int((x[:, u] <= 1e-7).sum()))
    assert rows.var_ok_u.tolist() == [True, True, True, False]


def test_naming_and_scoring_selection(acts_cache):
    cache, x = acts_cache
    with EmbeddingCache(cache) as c:
        rows = run_job(collect_unit_rows_job(c, lambda e: e, [1, 2], n_top=100, n_inactive=60))
    pick = naming_rows(rows, 1)
    # l0 = 150 -> top list = top 100 (capped), first 15 + last 15 of it
    top100 = np.argsort(-x[:, 1], kind="stable")[:100]
    assert sorted(pick.tolist()) == sorted(top100[:15].tolist() + top100[85:100].tolist())
    assert pick.tolist() != sorted(pick.tolist(), key=lambda r: -x[r, 1])  # shuffled
    # l0 = 10 -> top list truncated to 10 - 10 // 3 = 7 rows, all taken
    assert sorted(naming_rows(rows, 2).tolist()) == list(range(7))
    r_i, t_i = scoring_rows(rows, 2, per_side=30)
    assert r_i.size == 60 and len(set(r_i.tolist())) == 60
    assert t_i.sum() == 10  # only 10 of the top 30 are really active
    np.testing.assert_array_equal(t_i, (x[r_i, 2] > 1e-7).astype(int))
    r1, t1 = scoring_rows(rows, 1, per_side=30)
    assert t1.sum() == 30 and (x[r1[t1 == 0], 1] <= 1e-7).all()
    assert np.array_equal(r1, scoring_rows(rows, 1, per_side=30)[0])  # seeded


def test_progress_log_resume(tmp_path):
    out = tmp_path / "names.csv"
    log = ProgressLog(out, {"sae_id": "abc"}, resume=False, key=lambda r: r["unit"])
    log.append({"unit": 1, "concept": "a"})
    log.append({"unit": 2, "concept": "b"})
    with open(progress_path(out), "a") as fh:
        fh.write('{"type": "item", "unit": 3, "conc')  # torn by a kill
    with pytest.raises(MedsaeError, match="--resume"):
        ProgressLog(out, {"sae_id": "abc"}, resume=False, key=lambda r: r["unit"])
    with pytest.raises(MedsaeError, match="different run"):
        ProgressLog(out, {"sae_id": "xyz"}, resume=True, key=lambda r: r["unit"])
    log2 = ProgressLog(out, {"sae_id": "abc"}, resume=True, key=lambda r: r["unit"])
    assert sorted(log2.done) == [1, 2]
    log2.append({"unit": 3, "concept": "c"})
    lines = [json.loads(x) for x in progress_path(out).read_text().splitlines()]
    assert [r.get("unit") for r in lines] == [None, 1, 2, 3]
    assert log2.finish() == answers_path(out) and not progress_path(out).exists()


def test_labels_namer_job(tmp_path, rng):
    n = 120
    y = (rng.random((n, 2)) < 0.4).astype(np.float32)
    x = np.concatenate([y * 2 + 0.1 * rng.random((n, 2)), rng.random((n, 2))], 1)
    cache = write_cache(tmp_path / "c.h5", x.astype(np.float32), labels_nc=y,
                        label_names=["Edema", "Fracture"])
    res = run_job(name_units_job(cache, tmp_path / "names.csv", config=NameConfig(namer="labels")))
    by_unit = {n.unit: n for n in read_names_csv(res.output)}
    assert by_unit[0].concept == "Edema" and by_unit[1].concept == "Fracture"
    assert by_unit[0].score > 0.9 and len(by_unit) == 4
    res2 = run_job(name_units_job(cache, tmp_path / "n2.csv",
                                  config=NameConfig(namer="labels", units=(1, 0), max_units=1)))
    assert [n.unit for n in res2.names] == [1]
    nolab = write_cache(tmp_path / "nolab.h5", x.astype(np.float32))
    with pytest.raises(MedsaeError, match="needs labels"):
        run_job(name_units_job(nolab, tmp_path / "n3.csv", config=NameConfig(namer="labels")))


# ---- MedCLIP text tower ----------------------------------------------------------------------
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "left", "right", "pleural", "effusion",
         "nodule", "##s", "heart", "large", "tube", ",", "."]


@pytest.fixture(scope="module")
def tiny_medclip(tmp_path_factory):
    """A random checkpoint with MedCLIP's text-tower key layout (tiny BERT) + vocab.txt."""
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("medclip")
    torch.manual_seed(0)
    # hidden 64 -> the loader's default of hidden/64 heads gives 1, as configured here
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=3,
                     num_attention_heads=1, intermediate_size=64, max_position_embeddings=80)
    bert = BertModel(cfg).eval()
    proj = torch.nn.Linear(64, 24, bias=False)
    sd = {f"text_model.model.{k}": v for k, v in bert.state_dict().items()}
    sd["text_model.projection_head.weight"] = proj.weight.detach().clone()
    sd["text_model.model.embeddings.position_ids"] = torch.arange(80)[None]  # 4.24-era buffer
    sd["vision_model.model.fc.weight"] = torch.zeros(24, 8)  # image tower keys are ignored
    sd["logit_scale"] = torch.tensor(4.0)
    torch.save(sd, d / "pytorch_model.bin")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return d, bert, proj


def test_medclip_text_tower_pooling(tiny_medclip):
    import torch

    from medsae_desktop.core.naming.medclip_text import load_medclip_text

    d, bert, proj = tiny_medclip
    enc = load_medclip_text(d, d / "vocab.txt")
    got = enc.encode(["Left pleural effusions", "nodule"])
    assert got.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # Independent computation: lower-cased WordPiece, [CLS] ... [SEP], mean over positions of
    # hidden states 1, 2 and last, averaged, projected, normalised.
    ids = [2, 5, 7, 8, 10, 3]
    with torch.no_grad():
        hs = bert(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        pooled = (hs[1].mean(1) + hs[2].mean(1) + hs[-1].mean(1)) / 3
        want = proj(pooled)[0]
        want = (want / want.norm()).numpy()
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    assert enc.tokenizer.encode("Left pleural effusions").ids == ids


def test_medclip_text_errors(tiny_medclip, tmp_path):
    import torch

    from medsae_desktop.core.naming.medclip_text import load_medclip_text

    d, _, _ = tiny_medclip
    with pytest.raises(MedsaeError, match="vocab.txt not found"):
        load_medclip_text(d, tmp_path / "missing.txt")
    (tmp_path / "v.txt").write_text("a\nb\n")
    with pytest.raises(MedsaeError, match="lacks"):
        load_medclip_text(d, tmp_path / "v.txt")
    torch.save({"vision_model.model.fc.weight": torch.zeros(2, 2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(MedsaeError, match="text"):
        load_medclip_text(tmp_path, d / "vocab.txt")


def test_vocab_namer_job(tiny_medclip, tmp_path, rng):
    from medsae_desktop.core.naming.medclip_text import load_medclip_text
    from medsae_desktop.core.sae import save_sae

    d, _, _ = tiny_medclip
    terms = ["left pleural effusion", "large heart", "nodules", "tube"]
    (tmp_path / "terms.txt").write_text("\n".join(terms))
    t = load_medclip_text(d, d / "vocab.txt").encode(terms)
    w_dec = np.stack([t[1], t[3], t[0] + t[2]]).astype(np.float32)
    sae = save_sae(tmp_path / "sae", {
        "W_enc": w_dec.T.copy(), "b_enc": np.zeros(3, np.float32), "W_dec": w_dec,
        "b_dec": np.zeros(24, np.float32), "input_mean": np.zeros(24, np.float32)},
        {"arch": "relu", "d_in": 24, "d_sae": 3, "input_scale": 1.0})
    cache = write_cache(tmp_path / "c.h5", rng.normal(size=(5, 24)).astype(np.float32))
    cfg = NameConfig(namer="vocab", medclip_weights=str(d), terms_file=str(tmp_path / "terms.txt"))
    res = run_job(name_units_job(cache, tmp_path / "names.csv", sae_dir=sae, config=cfg))
    assert [n.concept for n in res.names[:2]] == ["large heart", "tube"]
    assert res.names[0].namer == "vocab" and res.names[0].score == pytest.approx(1.0, abs=1e-5)
