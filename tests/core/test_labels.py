"""CheXpert label CSVs: parsing (−1 kept, blank → NaN), column rules, paths, policies."""

import math

import numpy as np
import pytest

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.labels import (
    CHEXPERT_LABELS,
    apply_uncertainty_policy,
    read_label_csv,
    resolve_csv_path,
)

CHEXPERT_CSV = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_LABELS) + "\n"
    # No Finding=1; everything else blank
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,"
    "1.0" + "," * 13 + "\n"
    # uncertain Cardiomegaly (-1.0), positive Support Devices, explicit negatives, blanks
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,"
    ",,-1.0,1.0,,-1.0,,,,0.0,,,,1.0\n"
)


def test_chexpert_csv_keeps_uncertain_and_blanks(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text(CHEXPERT_CSV, encoding="utf-8")
    t = read_label_csv(p)
    assert t.names == CHEXPERT_LABELS                      # metadata columns are not labels
    assert len(t) == 2
    assert t.paths[0].endswith("patient00001/study1/view1_frontal.jpg")
    assert t.values_nc.dtype == np.float32 and t.values_nc.shape == (2, 14)
    row0 = t.values_nc[0]
    assert row0[0] == 1.0 and np.isnan(row0[1:]).all()
    row1 = dict(zip(t.names, t.values_nc[1].tolist()))
    assert row1["Cardiomegaly"] == -1.0 and row1["Edema"] == -1.0
    assert row1["Lung Opacity"] == 1.0 and row1["Support Devices"] == 1.0
    assert row1["Pneumothorax"] == 0.0
    assert math.isnan(row1["No Finding"]) and math.isnan(row1["Fracture"])


def test_label_columns_are_chexpert_columns_in_file_order(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("Path,Pneumothorax,extra,Cardiomegaly\na.png,1,7,0\n", encoding="utf-8")
    t = read_label_csv(p)
    assert t.names == ("Pneumothorax", "Cardiomegaly")     # 'extra' is not a CheXpert column
    assert t.values_nc.tolist() == [[1.0, 0.0]]


def test_custom_csv_uses_all_non_metadata_columns(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("\ufeffSex,Path,nodule,mass\nM,./a.png,1,\nF,sub\\b.png,-1,0\n\n",
                 encoding="utf-8")                          # BOM, ./ and \ separators
    t = read_label_csv(p)
    assert t.names == ("nodule", "mass")
    assert t.paths == ("a.png", "sub/b.png")
    np.testing.assert_array_equal(t.values_nc, np.array([[1, np.nan], [-1, 0]], np.float32))


def test_path_only_csv_has_no_labels(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("Path\na.png\n", encoding="utf-8")
    t = read_label_csv(p)
    assert t.names == () and t.values_nc.shape == (1, 0)


@pytest.mark.parametrize("text, match", [
    ("Image,Cardiomegaly\na.png,1\n", "no 'Path' column"),
    ("Path,Cardiomegaly\na.png,yes\n", r"line 2, column 'Cardiomegaly': 'yes' is not a number"),
    ("Path,Cardiomegaly\n,1\n", "line 2: empty Path"),
    ("", "CSV is empty"),
])
def test_bad_csvs_raise_one_line_errors(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(MedsaeError, match=match) as ei:
        read_label_csv(p)
    assert "\n" not in str(ei.value) and str(p) in str(ei.value)


def test_missing_csv(tmp_path):
    with pytest.raises(MedsaeError, match="labels CSV not found"):
        read_label_csv(tmp_path / "nope.csv")


def test_uncertainty_policies_leave_blanks_and_input_alone():
    y = np.array([[1, 0, -1, np.nan]], np.float32)
    np.testing.assert_array_equal(apply_uncertainty_policy(y, "zeros"), [[1, 0, 0, np.nan]])
    np.testing.assert_array_equal(apply_uncertainty_policy(y, "ones"), [[1, 0, 1, np.nan]])
    np.testing.assert_array_equal(apply_uncertainty_policy(y, "ignore"),
                                  [[1, 0, np.nan, np.nan]])
    np.testing.assert_array_equal(y, [[1, 0, -1, np.nan]])  # not modified in place
    with pytest.raises(ValueError, match="unknown uncertainty policy"):
        apply_uncertainty_policy(y, "U-MultiClass")  # type: ignore[arg-type]


def test_resolve_csv_path_both_conventions(tmp_path):
    ds = tmp_path / "CheXpert-v1.0-small"
    (ds / "train" / "p1").mkdir(parents=True)
    img = ds / "train" / "p1" / "v.jpg"
    img.write_bytes(b"x")
    # CheXpert: the CSV sits inside the data-set folder and paths start with its name.
    assert resolve_csv_path(ds, "CheXpert-v1.0-small/train/p1/v.jpg") == img
    # Relative to the CSV's folder.
    assert resolve_csv_path(ds, "train/p1/v.jpg") == img
    # Relative to the CSV's folder when the CSV is beside the data-set folder.
    assert resolve_csv_path(tmp_path, "CheXpert-v1.0-small/train/p1/v.jpg") == img
    assert resolve_csv_path(tmp_path, str(img)) == img      # absolute
    # Missing: the first candidate, so the caller can name it.
    assert resolve_csv_path(ds, "train/p9/v.jpg") == ds / "train" / "p9" / "v.jpg"


def test_matcher_maps_folder_images_to_rows(tmp_path):
    ds = tmp_path / "CheXpert-v1.0-small"
    (ds / "train" / "p1").mkdir(parents=True)
    (ds / "train" / "p1" / "a.jpg").write_bytes(b"x")
    csv_path = ds / "train.csv"
    csv_path.write_text("Path,Cardiomegaly\nCheXpert-v1.0-small/train/p1/a.jpg,1\n"
                        "train/p1/b.jpg,0\n", encoding="utf-8")
    m = read_label_csv(csv_path).match(ds)
    assert m.row_of("train/p1/a.jpg") == 0                   # via the CheXpert prefix
    assert m.row_of("train/p1/b.jpg") == 1                   # plain relative path
    assert m.row_of("train/p1/c.jpg") is None
    # A labels CSV stored elsewhere, with paths relative to its own folder, still matches.
    other = tmp_path / "labels"
    other.mkdir()
    (other / "l.csv").write_text("Path,Cardiomegaly\n../CheXpert-v1.0-small/train/p1/a.jpg,1\n",
                                 encoding="utf-8")
    assert read_label_csv(other / "l.csv").match(ds).row_of("train/p1/a.jpg") == 0
