"""Annotation store: names, statuses, history, reviews, export/import, migrations, threads."""

import csv
import json
import sqlite3
import threading

import pytest

from medsae_desktop.core import annotations as ann
from medsae_desktop.core.annotations import AnnotationStore, display_name
from medsae_desktop.core.errors import MedsaeError

SAE = "a" * 64
OTHER = "b" * 64


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore(tmp_path / "ann.sqlite", author="alice")
    yield s
    s.close()


def test_new_store_is_wal_and_versioned(store):
    assert store.schema_version() == ann.SCHEMA_VERSION
    mode = store._conn().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_review_flow_and_history(store):
    store.propose(SAE, 3, "cardiomegaly", "enlarged heart", namer="labels", score=0.61)
    n = store.get_name(SAE, 3)
    assert (n.concept, n.status, n.namer, n.score, n.author) == (
        "cardiomegaly", "proposed", "labels", 0.61, "alice")
    assert display_name(n, 3) == "cardiomegaly (proposed)"

    store.accept(SAE, 3, author="bob")
    assert store.get_name(SAE, 3).status == "accepted"
    assert display_name(store.get_name(SAE, 3), 3) == "cardiomegaly"

    store.edit(SAE, 3, "enlarged cardiac silhouette", "CTR > 0.5", author="carol")
    n = store.get_name(SAE, 3)
    assert (n.concept, n.status, n.namer, n.author) == (
        "enlarged cardiac silhouette", "edited", "labels", "carol")

    store.flag(SAE, 3, note="check laterals")
    assert display_name(store.get_name(SAE, 3), 3) == "enlarged cardiac silhouette (flagged)"
    store.reject(SAE, 3)
    assert display_name(store.get_name(SAE, 3), 3) == "unnamed #3"

    hist = store.history(SAE, 3)
    assert [h.action for h in hist] == ["propose", "accept", "edit", "flag", "reject"]
    assert [h.author for h in hist] == ["alice", "bob", "carol", "alice", "alice"]
    assert hist[0].concept == "cardiomegaly" and hist[2].concept == "enlarged cardiac silhouette"
    assert store.count_by_status(SAE)["rejected"] == 1


def test_proposal_never_overwrites_a_reviewed_name(store):
    store.propose(SAE, 1, "effusion", namer="labels")
    store.accept(SAE, 1)
    kept = store.propose(SAE, 1, "edema", namer="medgemma")
    assert kept.concept == "effusion" and kept.status == "accepted"
    assert store.get_name(SAE, 1).concept == "effusion"
    # ... but the proposal is kept in the history
    assert store.history(SAE, 1)[-1].concept == "edema"
    store.propose(SAE, 1, "edema", namer="medgemma", overwrite_reviewed=True)
    assert store.get_name(SAE, 1).status == "proposed"


def test_names_are_keyed_by_sae(store):
    store.propose(SAE, 0, "x", namer="labels")
    assert store.get_name(OTHER, 0) is None
    assert display_name(None, 0) == "unnamed #0"
    assert list(store.names(SAE)) == [0] and store.names(OTHER) == {}


def test_accept_without_name_and_empty_edit_are_errors(store):
    with pytest.raises(MedsaeError, match="no name to accept"):
        store.accept(SAE, 9)
    with pytest.raises(MedsaeError, match="needs a concept"):
        store.edit(SAE, 9, "   ")


def test_propose_many_from_namer_rows(store):
    rows = [{"unit": "0", "concept": "a", "description": "", "namer": "labels", "score": "0.3"},
            {"unit": "1", "concept": "b", "description": "d", "namer": "labels", "score": ""}]
    assert store.propose_many(SAE, rows) == 2
    assert store.propose_many(SAE, rows) == 0  # unchanged → no new history
    assert store.get_name(SAE, 1).score is None and store.get_name(SAE, 0).score == 0.3
    assert len(store.history(SAE, 0)) == 1


def test_reviews(store):
    store.add_review(SAE, 2, "img-1", "pos", note="clear")
    store.add_review(SAE, 2, "img-1", "neg")  # replaces
    store.add_review(SAE, 2, "img-2", "unsure")
    rv = store.reviews(SAE, unit=2)
    assert [(r.image_key, r.verdict) for r in rv] == [("img-1", "neg"), ("img-2", "unsure")]
    with pytest.raises(MedsaeError, match="verdict"):
        store.add_review(SAE, 2, "img-1", "maybe")


def test_csv_round_trip(store, tmp_path):
    store.propose(SAE, 0, "nodule, small", 'round "opacity"', namer="labels", score=0.25)
    store.accept(SAE, 0)
    store.propose(SAE, 5, "effusion", namer="labels")
    out = store.export_csv(SAE, tmp_path / "names.csv")
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["unit"] for r in rows] == ["0", "5"]
    assert rows[0]["concept"] == "nodule, small" and rows[0]["status"] == "accepted"

    other = AnnotationStore(tmp_path / "other.sqlite", author="dan")
    assert other.import_file(out) == 2
    n = other.get_name(SAE, 0)
    assert (n.concept, n.description, n.status, n.score, n.author) == (
        "nodule, small", 'round "opacity"', "accepted", 0.25, "alice")
    # names never attach to other weights
    with pytest.raises(MedsaeError, match="belong to SAE"):
        other.import_file(out, sae_id=OTHER)
    other.close()


def test_import_namer_csv_needs_target_sae(store, tmp_path):
    p = tmp_path / "NAMES.csv"
    p.write_text("unit,concept,description,namer,score\n4,pneumothorax,,labels,0.4\n")
    with pytest.raises(MedsaeError, match="no sae_id"):
        store.import_file(p)
    assert store.import_file(p, sae_id=SAE) == 1
    assert store.get_name(SAE, 4).status == "proposed"
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(MedsaeError, match="lacks column"):
        store.import_file(bad, sae_id=SAE)


def test_json_round_trip_keeps_history_and_reviews(store, tmp_path):
    store.propose(SAE, 7, "edema", namer="medgemma")
    store.edit(SAE, 7, "pulmonary edema")
    store.add_review(SAE, 7, "img-9", "pos")
    out = store.export_json(SAE, tmp_path / "a.json")
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == ann.SCHEMA_VERSION and doc["sae_id"] == SAE
    assert [h["action"] for h in doc["history"]] == ["propose", "edit"]
    other = AnnotationStore(tmp_path / "o.sqlite")
    assert other.import_file(out) == 1
    assert other.get_name(SAE, 7).concept == "pulmonary edema"
    assert other.get_name(SAE, 7).status == "edited"
    assert [r.verdict for r in other.reviews(SAE)] == ["pos"]
    other.close()


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "future.sqlite"
    AnnotationStore(p).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(MedsaeError, match="newer than this program"):
        AnnotationStore(p)


def test_not_a_database_is_a_one_line_error(tmp_path):
    p = tmp_path / "junk.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MedsaeError, match="annotation store"):
        AnnotationStore(p)


def test_migrations_apply_in_order_on_an_old_store(tmp_path, monkeypatch):
    """A v1 store gains a v2 migration on open, data intact and version bumped."""
    p = tmp_path / "old.sqlite"
    s = AnnotationStore(p)
    s.propose(SAE, 1, "kept", namer="labels")
    s.close()
    monkeypatch.setattr(ann, "MIGRATIONS",
                        [*ann.MIGRATIONS, "ALTER TABLE feature_name ADD COLUMN extra TEXT"])
    s2 = AnnotationStore(p)
    assert s2.schema_version() == 2
    cols = [r[1] for r in s2._conn().execute("PRAGMA table_info(feature_name)")]
    assert "extra" in cols
    con = s2._conn()
    assert con.execute("SELECT concept FROM feature_name").fetchone()[0] == "kept"
    s2.close()


def test_one_connection_per_thread_and_concurrent_writes(store):
    errors = []

    def work(base):
        try:
            for u in range(base, base + 20):
                store.propose(SAE, u, f"c{u}", namer="labels")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 100,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.names(SAE)) == 60
    assert len(store._all) >= 4  # main thread + one per worker
