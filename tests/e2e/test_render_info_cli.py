"""End-to-end tests of ``medsae render`` and ``medsae info`` (DESIGN.md §3) on real files.

Most tests call ``medsae_desktop.cli.main`` in-process; a few run the installed ``medsae``
console script as a real subprocess to check exit codes and stderr as a user sees them.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from medsae_desktop.cli import main
from medsae_desktop.core.images import Window, apply_window, read_image

REPO_ROOT = Path(__file__).resolve().parents[2]
MEDSAE_EXE = Path(sys.executable).parent / "medsae"
RG1_PHI = ("CompressedSamples^RG1", "19400305", "Philips Medical Systems Hamburg", "9RG1",
           "THORAVISION", "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457")


def data_path(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name} missing: pydicom-data must be installed"
    return path


@pytest.fixture(scope="module")
def rg1_path() -> str:
    return data_path("RG1_UNCR.dcm")


@pytest.fixture(scope="module")
def rg1_render_hw(rg1_path) -> np.ndarray:
    return read_image(rg1_path).render_hw


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        return np.asarray(im)


def stderr_lines(captured) -> list[str]:
    return [line for line in captured.err.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------
# render
# ------------------------------------------------------------------------------------------


def test_render_writes_the_full_resolution_default_render(tmp_path, capsys, rg1_path,
                                                          rg1_render_hw):
    out = tmp_path / "rg1.png"
    assert main(["render", rg1_path, "-o", str(out)]) == 0
    written_hw = read_png(out)
    assert written_hw.shape == (1955, 1841)
    np.testing.assert_array_equal(written_hw, rg1_render_hw)
    captured = capsys.readouterr()
    assert f"wrote {out}: 1841 x 1955 pixels, window 15000/30000" in captured.out
    assert captured.err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rg1.png"]


def test_render_with_window(tmp_path, capsys, rg1_path):
    out = tmp_path / "w.png"
    assert main(["render", rg1_path, "-o", str(out), "--window", "12000", "20000"]) == 0
    expected_hw = apply_window(read_image(rg1_path), Window(12000, 20000))
    np.testing.assert_array_equal(read_png(out), expected_hw)
    assert "window 12000/20000 (command line)" in capsys.readouterr().out


def test_render_frame_of_multiframe(tmp_path, capsys):
    path = data_path("emri_small.dcm")
    out = tmp_path / "f3.png"
    assert main(["render", path, "-o", str(out), "--frame", "3"]) == 0
    np.testing.assert_array_equal(read_png(out), read_image(path, frame=3).render_hw)
    assert "frame 3 of 10" in capsys.readouterr().out
    assert main(["render", path, "-o", str(out), "--frame", "10"]) == 1
    err = stderr_lines(capsys.readouterr())
    assert len(err) == 1 and "frame 10 is out of range" in err[0] and path in err[0]


def test_render_png_input_and_colour_warning(tmp_path, capsys, rng):
    gray_hw = rng.integers(0, 256, size=(30, 40)).astype(np.uint8)
    Image.fromarray(gray_hw).save(tmp_path / "in.png")
    assert main(["render", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")]) == 0
    np.testing.assert_array_equal(read_png(tmp_path / "out.png"), gray_hw)
    capsys.readouterr()
    colour = data_path("SC_rgb_jpeg_dcmtk.dcm")
    assert main(["render", colour, "-o", str(tmp_path / "colour.png")]) == 0
    err = stderr_lines(capsys.readouterr())
    assert err == [f"medsae render: warning: {colour}: colour image (YBR_FULL) converted to "
                   "grayscale"]


def test_render_refuses_to_overwrite_its_input(tmp_path, capsys, rg1_path):
    copy = tmp_path / "study.dcm"
    shutil.copy(rg1_path, copy)
    before = copy.read_bytes()
    assert main(["render", str(copy), "-o", str(copy)]) == 2
    assert copy.read_bytes() == before
    assert len(stderr_lines(capsys.readouterr())) == 1


@pytest.mark.parametrize("argv_tail", [["--window", "100", "0"], ["--window", "100", "-3"],
                                       ["--window", "nan", "10"], ["--frame", "-1"]])
def test_render_usage_errors_exit_2(tmp_path, capsys, argv_tail, rg1_path):
    out = tmp_path / "o.png"
    assert main(["render", rg1_path, "-o", str(out), *argv_tail]) == 2
    assert len(stderr_lines(capsys.readouterr())) == 1
    assert not out.exists()


def test_render_to_missing_folder(tmp_path, capsys, rg1_path):
    out = tmp_path / "no" / "such" / "dir" / "o.png"
    assert main(["render", rg1_path, "-o", str(out)]) == 1
    err = stderr_lines(capsys.readouterr())
    assert len(err) == 1 and str(out) in err[0] and "output folder does not exist" in err[0]


def _truncated(tmp: Path, name: str, n_bytes: int | None = None) -> Path:
    data = Path(data_path(name)).read_bytes()
    path = tmp / f"cut_{name}"
    path.write_bytes(data[: n_bytes or len(data) // 2])
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _modified(tmp: Path, **changes) -> Path:
    ds = dcmread(data_path("MR_small.dcm"))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(tmp / "modified.dcm")
    return tmp / "modified.dcm"


def _unsupported_syntax(tmp: Path) -> Path:
    ds = dcmread(data_path("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.save_as(tmp / "mpeg2.dcm")
    return tmp / "mpeg2.dcm"


BAD_INPUTS = {
    "zero-byte": (lambda t: _write(t / "empty.dcm", b""), "file is empty"),
    "random bytes": (lambda t: _write(t / "noise.dcm", np.random.default_rng(1).bytes(9000)),
                     "not a DICOM, PNG or JPEG image"),
    "truncated DICOM": (lambda t: _truncated(t, "RG1_UNCR.dcm"), "pixel data are truncated"),
    "truncated JPEG 2000 DICOM": (lambda t: _truncated(t, "RG1_J2KR.dcm"), "truncated"),
    "RT plan without pixels": (lambda t: Path(pydicom.examples.get_path("rt_plan")),
                               "contains no image: RT Plan Storage"),
    "SR without pixels": (lambda t: Path(data_path("test-SR.dcm")),
                          "contains no image: Comprehensive SR Storage"),
    "unsupported transfer syntax": (_unsupported_syntax, "MPEG2 Main Profile / Main Level"),
    "12-bit JPEG Extended": (lambda t: Path(data_path("JPGExtended.dcm")),
                             "12-bit JPEG Extended (Process 2 and 4) (1.2.840.10008.1.2.4.51)"),
    "absurd dimensions": (lambda t: _modified(t, Rows=65535, Columns=65535), "image too large"),
    "text file": (lambda t: _write(t / "notes.txt", b"just some notes\n"), "is a text file"),
    "csv file": (lambda t: _write(t / "labels.csv", b"Path,Edema\nx.png,1\n"), "is a text file"),
    "pdf file": (lambda t: _write(t / "report.pdf", b"%PDF-1.7\n%\xb5\xb5\n"), "is a PDF"),
    "directory": (lambda t: t / "a_folder", "is a directory"),
    "missing file": (lambda t: t / "missing.dcm", "no such file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_render_bad_input_one_line_exit_1_no_output(tmp_path, capsys, case):
    make, expected = BAD_INPUTS[case]
    (tmp_path / "a_folder").mkdir()
    path = make(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.png"
    assert main(["render", str(path), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    err = stderr_lines(captured)
    assert len(err) == 1, captured.err
    assert err[0].startswith(f"medsae render: error: {path}: ")
    assert expected in err[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert list(out_dir.iterdir()) == []  # no output, no leftover temp file


def test_render_failure_leaves_existing_output_untouched(tmp_path, capsys):
    out = tmp_path / "o.png"
    out.write_bytes(b"previous result")
    bad = _write(tmp_path / "bad.dcm", b"")
    assert main(["render", str(bad), "-o", str(out)]) == 1
    assert out.read_bytes() == b"previous result"


# ------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------


def test_info_text_hides_phi(capsys, rg1_path):
    assert main(["info", rg1_path]) == 0
    captured = capsys.readouterr()
    for secret in RG1_PHI:
        assert secret not in captured.out and secret not in captured.err
    lines = captured.out.splitlines()
    assert "Modality                    CR" in lines
    assert "Transfer syntax             Explicit VR Little Endian (1.2.840.10008.1.2.1)" in lines
    assert any(line.startswith("Photometric interpretation  MONOCHROME1") for line in lines)
    # Aligned: every value starts in the same column.
    assert len({len(line) - len(line[28:]) for line in lines}) == 1
    assert captured.err == ""


def test_info_json_hides_phi(capsys, rg1_path):
    assert main(["info", rg1_path, "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["fields"]["Rows"] == "1955" and document["fields"]["Columns"] == "1841"
    assert "phi" not in document
    for secret in RG1_PHI:
        assert secret not in captured.out and secret not in captured.err


@pytest.mark.parametrize("as_json", [False, True])
def test_info_show_phi(capsys, rg1_path, as_json):
    argv = ["info", rg1_path, "--show-phi"] + (["--json"] if as_json else [])
    assert main(argv) == 0
    captured = capsys.readouterr()
    for secret in RG1_PHI:
        assert secret in captured.out
    if as_json:
        assert json.loads(captured.out)["phi"]["PatientName"] == "CompressedSamples^RG1"
    else:
        assert "Identifying fields (PHI):" in captured.out
    err = stderr_lines(captured)
    assert len(err) == 1 and "identifying fields (PHI) are shown" in err[0]


def test_info_png(tmp_path, capsys, rng):
    Image.fromarray(rng.integers(0, 65535, (20, 30)).astype(np.uint16)).save(tmp_path / "a.png")
    assert main(["info", str(tmp_path / "a.png"), "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)["fields"]
    assert fields["Format"] == "PNG" and fields["Rows"] == "20" and fields["Columns"] == "30"
    assert fields["Bit depth"] == "16" and fields["Mode"].startswith("I")


def test_info_burned_in_annotation_warning(tmp_path, capsys):
    path = _modified(tmp_path, BurnedInAnnotation="YES")
    assert main(["info", str(path)]) == 0
    err = stderr_lines(capsys.readouterr())
    assert err == [f"medsae info: warning: {path}: BurnedInAnnotation is YES: the pixels may "
                   "contain identifying text"]
    assert main(["render", str(path), "-o", str(tmp_path / "b.png")]) == 0
    assert "identifying text" in capsys.readouterr().err


def test_info_of_non_image_dicom_exits_0_with_warning(capsys):
    path = pydicom.examples.get_path("rt_plan")
    assert main(["info", str(path)]) == 0
    captured = capsys.readouterr()
    assert "RT Plan Storage" in captured.out
    assert "not an image" in captured.err


@pytest.mark.parametrize("case", ["zero-byte", "random bytes", "text file", "pdf file",
                                  "directory", "missing file"])
def test_info_bad_input_one_line_exit_1(tmp_path, capsys, case):
    make, expected = BAD_INPUTS[case]
    (tmp_path / "a_folder").mkdir()
    path = make(tmp_path)
    assert main(["info", str(path)]) == 1
    captured = capsys.readouterr()
    err = stderr_lines(captured)
    assert len(err) == 1 and err[0].startswith(f"medsae info: error: {path}: ")
    assert expected in err[0] and captured.out == ""


# ------------------------------------------------------------------------------------------
# The installed console script, as a real subprocess
# ------------------------------------------------------------------------------------------


def run_medsae(*args: str, **kwargs) -> subprocess.CompletedProcess:
    assert MEDSAE_EXE.exists(), f"{MEDSAE_EXE} missing: install the package (pip install -e .)"
    return subprocess.run([str(MEDSAE_EXE), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT, **kwargs)


def test_subprocess_render_and_info(tmp_path, rg1_path, rg1_render_hw):
    out = tmp_path / "rg1.png"
    result = run_medsae("render", rg1_path, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    np.testing.assert_array_equal(read_png(out), rg1_render_hw)

    result = run_medsae("info", rg1_path, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["fields"]["Modality"] == "CR"
    assert not any(secret in result.stdout for secret in RG1_PHI)


def test_subprocess_bad_inputs(tmp_path):
    # The 12-bit JPEG case makes two decoding plugins fail inside pydicom, which logs their
    # tracebacks: none of that may reach the user.
    cases = [(_truncated(tmp_path, "RG1_J2KR.dcm"), "truncated"),
             (Path(data_path("JPGExtended.dcm")), "unsupported: 12-bit JPEG Extended"),
             (_write(tmp_path / "empty.png", b""), "file is empty")]
    for path, expected in cases:
        out = tmp_path / "o.png"
        result = run_medsae("render", str(path), "-o", str(out))
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"medsae render: error: {path}: ")
        assert expected in result.stderr
        assert not out.exists()


def test_subprocess_permission_denied(tmp_path):
    """A real OS refusal of a chmod 000 file.

    Root reads anything through the DAC-override capabilities, so as root the command runs
    under ``setpriv`` with those two capabilities removed from its bounding set.
    """
    locked = tmp_path / "locked.dcm"
    shutil.copy(data_path("MR_small.dcm"), locked)
    locked.chmod(0o000)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is not installed")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
        probe = subprocess.run([*prefix, "cat", str(locked)], capture_output=True, timeout=30)
        if probe.returncode == 0:
            pytest.skip("cannot drop the DAC-override capabilities here, so root reads anyway")
    for command in (["render", str(locked), "-o", str(tmp_path / "o.png")],
                    ["info", str(locked)]):
        result = subprocess.run([*prefix, str(MEDSAE_EXE), *command], capture_output=True,
                                text=True, timeout=120, cwd=REPO_ROOT)
        assert result.returncode == 1, result.stderr
        assert result.stderr == f"medsae {command[0]}: error: {locked}: permission denied\n"
    assert not (tmp_path / "o.png").exists()
