"""Two generated corpora in one manifest would share clip ids: the second is refused, with what to do."""

from __future__ import annotations

import shutil

import pytest

from flows.data import import_manifest
from preprocessing.corpus import CorpusConfig, generate_corpus
from preprocessing.manifest import open_manifest, split_rows


def test_a_second_generated_corpus_is_refused_and_the_first_stays_whole(tmp_path):
    small, other = tmp_path / "corpus-a", tmp_path / "corpus-b"
    generate_corpus(CorpusConfig(n_videos=6, seed=0), small, progress=False)
    generate_corpus(CorpusConfig(n_videos=4, seed=1), other, progress=False)
    db = tmp_path / "manifest.duckdb"
    first = import_manifest(db, small, generated=True)
    assert first.n_imported + first.n_failed == 6
    with pytest.raises(ValueError, match=r"another generated corpus .*\(6 clips.*own\s+--state-dir"):
        import_manifest(db, other, generated=True)
    again = import_manifest(db, small, generated=True)  # the same corpus again: fine, nothing to do
    assert again.n_imported == 0 and again.n_skipped == first.n_imported
    con = open_manifest(db, read_only=True)
    paths = [r["path"] for split in ("train", "val", "test") for r in split_rows(con, split)]
    con.close()
    assert len(paths) == first.n_imported and all(p.startswith(str(small.resolve())) for p in paths)
    # A state dir moved elsewhere keeps its corpus folder's name (the config hash): not another corpus.
    moved = tmp_path / "moved" / "corpus-a"
    shutil.copytree(small, moved)
    assert import_manifest(db, moved, generated=True).n_imported == first.n_imported  # new paths, same clips
