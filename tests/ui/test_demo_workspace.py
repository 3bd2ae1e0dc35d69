"""The built-in demo workspace: built once, reused, rebuilt when stale; labelled as a demo."""

import json
import shutil
from pathlib import Path

import pytest

from medsae_desktop.core import demo as demo_mod
from medsae_desktop.core.progress import run_job


@pytest.fixture(scope="module")
def built(request):
    from medsae_desktop.ui.dialogs.qt_demo_dialog import demo_config

    home = Path(request.config.cache.mkdir("medsae-demo-data"))
    root = home / "medsae-desktop" / "demo"
    return root, demo_config(), run_job(demo_mod.build_demo_job(root, demo_config()))


def test_demo_contents(built):
    root, cfg, ws = built
    m = json.loads((root / "manifest.json").read_text())
    assert m["kind"] == "medsae-demo-workspace" and "untrained" in m["note"]
    assert ws.study_path.name == "RG1_UNCR.dcm"
    assert len(list(ws.images_root.glob("*.png"))) == cfg.n_phantoms
    names = ws.names_csv.read_text().splitlines()
    assert names[0] == "unit,concept,description,namer,score"
    assert len(names) > 5  # some features are named
    assert all(float(r.split(",")[-1]) > demo_mod.NAME_MIN_CORR for r in names[1:])
    assert (ws.report_dir / "summary.json").is_file()
    cfgj = json.loads((ws.sae_dir / "cfg.json").read_text())
    assert cfgj["complete"] and cfgj["d_sae"] == cfg.d_sae and cfgj["sae_sha256"] == ws.sae_id
    assert m["build_seconds"] < 600


def test_valid_demo_is_reused_without_work(built):
    root, cfg, ws = built
    msgs = []
    again = run_job(demo_mod.build_demo_job(root, cfg), lambda p: msgs.append(p.message))
    assert msgs == ["demo workspace ready"] and again.sae_id == ws.sae_id


def test_stale_or_broken_demo_is_not_reused(built, tmp_path):
    root, cfg, ws = built
    copy = tmp_path / "demo"
    shutil.copytree(root, copy)
    assert demo_mod.load_demo(copy, cfg) is not None
    # another recipe → rebuild
    other = demo_mod.DemoConfig.from_json({**cfg.to_json(), "steps": cfg.steps + 1})
    assert demo_mod.load_demo(copy, other) is None
    # weights that do not match the manifest → rebuild
    (copy / "sae" / "cfg.json").write_text(
        (copy / "sae" / "cfg.json").read_text().replace(ws.sae_id, "0" * 64))
    assert demo_mod.load_demo(copy, cfg) is None
    shutil.rmtree(copy / "sae")
    assert demo_mod.load_demo(copy, cfg) is None
