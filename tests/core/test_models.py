"""Local model store: install from folder/zip, verify detects tampering, errors are one line."""

import zipfile

import pytest

from medsae_desktop.cli import main
from medsae_desktop.core import models
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import run_job


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAE_HOME", str(tmp_path / "home"))


def _fake_weights(folder):
    folder.mkdir(parents=True)
    (folder / "pytorch_model.bin").write_bytes(b"\x00weights" * 100)
    return folder


def test_manifest_lists_the_known_models():
    names = {s.name for s in models.load_manifest()}
    assert {"medclip-resnet", "medclip-swin", "medgemma-4b-it"} <= names


def test_install_from_folder_then_verify_detects_change(tmp_path):
    src = _fake_weights(tmp_path / "src" / "medclip-pretrained")
    dest = run_job(models.install_model(str(tmp_path / "src"), "medclip-resnet"))
    assert (dest / "pytorch_model.bin").read_bytes() == (src / "pytorch_model.bin").read_bytes()
    assert models.verify_model("medclip-resnet").ok
    with open(dest / "pytorch_model.bin", "ab") as f:
        f.write(b"x")
    r = models.verify_model("medclip-resnet")
    assert not r.ok and "changed" in r.problems[0]


def test_install_from_zip_and_reject_zip_slip(tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("medclip-vit-pretrained/pytorch_model.bin", b"abc")
    dest = run_job(models.install_model(str(z), "medclip-swin"))
    assert (dest / "pytorch_model.bin").read_bytes() == b"abc"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as f:
        f.writestr("../../escape.bin", b"x")
    with pytest.raises(MedsaeError, match="unsafe path"):
        run_job(models.install_model(str(evil), "medclip-swin"))


def test_install_wrong_content_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "readme.txt").write_text("nothing here")
    with pytest.raises(MedsaeError, match="does not contain"):
        run_job(models.install_model(str(tmp_path / "d"), "medclip-resnet"))
    assert models.installed_record("medclip-resnet") is None


def test_cli_models_errors_are_one_line(tmp_path, capsys):
    assert main(["models", "install", str(tmp_path / "missing"), "--name", "medclip-resnet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
    assert main(["models", "install", str(tmp_path)]) == 2
    assert main(["models", "list"]) == 0
    assert "medclip-resnet" in capsys.readouterr().out
