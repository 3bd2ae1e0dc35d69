"""The MedGemma path for real, on a tiny random Gemma 3 folder: loading (local files only), chat
template with images, batched generate, garbage answers, resumable naming, naming accuracy."""

import json

import numpy as np
import pytest

from medsae_desktop.core.cache import write_cache
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.naming import UNPARSED, NameConfig, name_units_job, read_names_csv
from medsae_desktop.core.naming.progress_log import answers_path, progress_path
from medsae_desktop.core.progress import run_job

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from medsae_desktop.core.naming.tiny_gemma import build_tiny_gemma3

    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"))


@pytest.fixture(scope="module")
def model(tiny_dir):
    from medsae_desktop.core.naming.medgemma import MedGemmaConfig, load_medgemma

    return load_medgemma(MedGemmaConfig(model_dir=str(tiny_dir), device="cpu", batch_size=2))


@pytest.fixture
def image_cache(tmp_path, rng):
    """40 small PNGs in a folder and a cache whose 'raw units' have known activations."""
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    paths = []
    for i in range(40):
        Image.fromarray((rng.random((24, 20)) * 255).astype(np.uint8)).save(
            tmp_path / "imgs" / f"{i}.png")
        paths.append(f"imgs/{i}.png")
    x = np.zeros((40, 3), np.float32)
    x[:30, 0] = rng.random(30) + 0.1  # active on 30
    x[:25, 1] = rng.random(25) + 0.1  # active on 25
    x[:, 2] = 0                       # dead: never named
    return write_cache(tmp_path / "c.h5", x, paths=paths), tmp_path


def test_load_and_batched_generate(model, tiny_dir):
    from PIL import Image

    from medsae_desktop.core.naming.medgemma import (
        NAMING_PROMPT, naming_conversation, scoring_conversation)

    assert model.device == "cpu" and model.description["quantize"] == "none"
    assert type(model.model).__name__ == "Gemma3ForConditionalGeneration"
    imgs = [Image.new("RGB", (224, 224), (i * 40, 0, 0)) for i in range(3)]
    convs = [naming_conversation(imgs), scoring_conversation("nodule", "round", imgs[:2]),
             naming_conversation(imgs[:1])]
    text = model.processor.apply_chat_template(convs[0], add_generation_prompt=True,
                                               tokenize=False)
    assert NAMING_PROMPT.splitlines()[0][:40] in text and "You are an expert radiologist." in text
    out = model.generate(convs, max_new_tokens=4)  # 3 conversations in batches of 2
    assert len(out) == 3 and all(isinstance(t, str) for t in out)


def test_model_dir_checks(tmp_path, tiny_dir):
    from medsae_desktop.core.naming.medgemma import MedGemmaConfig, check_model_dir, load_medgemma

    with pytest.raises(MedsaeError, match="not found"):
        check_model_dir(tmp_path / "none")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(MedsaeError, match="safetensors"):
        check_model_dir(tmp_path / "half")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(MedsaeError, match="CUDA"):
            load_medgemma(MedGemmaConfig(model_dir=str(tiny_dir), quantize="4bit"))
        with pytest.raises(MedsaeError, match="CUDA"):
            load_medgemma(MedGemmaConfig(model_dir=str(tiny_dir), device="cuda"))


def test_name_job_garbage_answers_and_resume(image_cache, model, monkeypatch):
    cache, tmp = image_cache
    monkeypatch.setattr(model, "batch_size", 1)  # one unit per generate call
    out = tmp / "names.csv"
    cfg = NameConfig(namer="medgemma", min_active=20, max_new_tokens=3, images_root=str(tmp))
    job = name_units_job(cache, out, config=cfg, medgemma=model)
    for p in job:  # interrupt after the first named unit
        if p.message.startswith("named 1/"):
            break
    job.close()
    assert progress_path(out).is_file() and not out.exists()
    with pytest.raises(MedsaeError, match="--resume"):
        run_job(name_units_job(cache, out, config=cfg, medgemma=model))
    import dataclasses

    res = run_job(name_units_job(cache, out, config=dataclasses.replace(cfg, resume=True),
                                 medgemma=model))
    assert res.n_resumed == 1 and [n.unit for n in res.names] == [0, 1]  # unit 2 is dead
    names = read_names_csv(out)
    assert [n.namer for n in names] == ["medgemma", "medgemma"]
    assert res.n_unparsed == sum(n.concept == UNPARSED for n in names)
    recs = [json.loads(x) for x in answers_path(out).read_text().splitlines()]
    assert recs[0]["type"] == "header" and len(recs) == 3
    item = recs[1]
    # active on 30 -> top two-thirds = 20 images, all shown (15 + 15 needs more than 30)
    assert isinstance(item["raw"], str) and len(item["rows"]) == 20
    assert not progress_path(out).exists()


def test_name_job_needs_active_units(image_cache, model):
    cache, tmp = image_cache
    with pytest.raises(MedsaeError, match="at least 61"):
        run_job(name_units_job(cache, tmp / "n.csv", config=NameConfig(namer="medgemma"),
                               medgemma=model))


def test_score_names_job(image_cache, model):
    from medsae_desktop.core.eval.naming_accuracy import ScoreConfig, score_names_job
    from medsae_desktop.core.naming import FeatureName, write_names_csv

    cache, tmp = image_cache
    names = write_names_csv(tmp / "names.csv", [
        FeatureName(0, "left effusion", "fluid", "medgemma"),
        FeatureName(1, "pacemaker", "device", "medgemma"),
        FeatureName(2, UNPARSED, "", "medgemma")])  # unparsed names are not scored
    res = run_job(score_names_job(cache, names, tmp / "scores.csv", model,
                                  config=ScoreConfig(per_side=4, max_new_tokens=3,
                                                     images_root=str(tmp))))
    conds = [(s.condition, s.unit) for s in res.scores]
    assert conds == [("raw", 0), ("raw", 1), ("shuffled", 0), ("shuffled", 1)]
    shuffled = {s.unit: s.concept for s in res.scores if s.condition == "shuffled"}
    assert shuffled == {0: "pacemaker", 1: "left effusion"}
    for s in res.scores:
        assert s.n_images == 8 and 0.0 <= s.accuracy <= 1.0
        assert s.tp + s.fn == 4  # both units are active on their top 4 images
    assert (tmp / "scores.png").is_file() and (tmp / "scores.summary.json").is_file()
    assert res.summary["conditions"]["raw"]["n_units"] == 2
