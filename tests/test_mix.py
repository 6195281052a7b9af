"""Data mixes: weighted draws reproducible from a seed and recorded; stats; importers; the CLI."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import pytest

from flows.cli.data import main as data_main
from preprocessing.importers import import_folder, import_video2dataset
from preprocessing.manifest import open_manifest, record_token_cache
from preprocessing.mix import MixComponent, create_mix, draw, mix_stats
from tests.media import make_h264


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for i in range(4):
        make_h264(root / f"v{i}.mp4", 0.5)
    (root / "ann.csv").write_text(
        "path,caption,split,label,question,answer\n"
        + "".join(f"v{i}.mp4,clip {i},train,cls{i % 2},what?,thing {i}\n" for i in range(4)))
    return root


@pytest.fixture
def con(folder, tmp_path):
    con = open_manifest(str(tmp_path / "m.duckdb"))
    summary = import_folder(con, folder, folder / "ann.csv", dataset="d", default_split="train")
    assert (summary.n_imported, summary.n_failed) == (4, 0)
    yield con
    con.close()


SFT = [MixComponent(name="vqa", task="vqa", dataset="d", split="train", weight=3),
       MixComponent(name="captions", task="caption", dataset="d", split="train", weight=1)]


def test_draws_follow_weights_are_reproducible_and_recorded(con):
    create_mix(con, "sft", SFT)
    first = draw(con, "sft", 4000, seed=7, run_id="run-a")
    assert first == draw(con, "sft", 4000, seed=7) and first != draw(con, "sft", 4000, seed=8)
    share = Counter(d.component for d in first)["vqa"] / 4000
    assert share == pytest.approx(0.75, abs=0.03)  # 3 : 1 weights
    # Within a component every item is drawn once per pass: the first 4 vqa draws are all 4 items.
    vqa = [d.source_id for d in first if d.component == "vqa"]
    assert sorted(vqa[:4]) == ["v0", "v1", "v2", "v3"]
    recorded = con.execute("SELECT count(*), min(seed), max(draw_idx) FROM mix_draws WHERE run_id = 'run-a'").fetchall()
    assert recorded == [(4000, 7, 3999)]


def test_stats_counts_epochs_and_tokens(con):
    create_mix(con, "sft", SFT)
    record_token_cache(con, cache_key="ab" * 32, encoder_id="tiny", config_json="{}", path="/x",
                       source_ids=["v0", "v1", "v2", "v3"], num_tokens=8)
    stats = {s.component: s for s in mix_stats(con, "sft", n_draws=400)}
    assert (stats["vqa"].n_items, stats["vqa"].share, stats["vqa"].epochs) == (4, 0.75, 75.0)
    assert stats["captions"].n_tokens == 32 and stats["captions"].epochs == 25.0
    with pytest.raises(KeyError, match="no mix"):
        mix_stats(con, "nope")


def test_component_parse_and_validation():
    assert MixComponent.parse("v=vqa:d:train:2.5").weight == 2.5
    with pytest.raises(ValueError):
        MixComponent.parse("v=vqa:d:train")
    with pytest.raises(ValueError, match="task"):
        MixComponent.parse("v=poem:d:train:1")


def test_video2dataset_tar_import(tmp_path, folder):
    tar_path = tmp_path / "00000.tar"
    with tarfile.open(tar_path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("000000000.mp4", (folder / "v0.mp4").read_bytes())
        add("000000000.txt", b"a test pattern")
        add("000000001.mp4", (folder / "v1.mp4").read_bytes())
        add("000000001.json", json.dumps({"caption": "from json"}).encode())
        add("000000002.mp4", (folder / "v2.mp4").read_bytes())
        add("000000002.json", json.dumps({"url": "x"}).encode())  # no caption: a failure
    con = open_manifest(":memory:")
    summary = import_video2dataset(con, [tar_path], tmp_path / "media", dataset="web")
    assert (summary.n_in, summary.n_imported, summary.n_failed) == (3, 2, 1)
    captions = con.execute("SELECT source_id, text FROM annotations ORDER BY source_id").fetchall()
    assert captions == [("00000/000000000", "a test pattern"), ("00000/000000001", "from json")]
    again = import_video2dataset(con, [tar_path], tmp_path / "media", dataset="web")
    assert (again.n_imported, again.n_skipped) == (0, 2)  # idempotent


def test_cli_import_mix_and_failures(folder, tmp_path, capsys):
    db = str(tmp_path / "cli.duckdb")
    assert data_main(["--manifest", db, "import", "folder", str(folder), "--annotations", str(folder / "ann.csv"),
                      "--dataset", "d"]) == 0
    assert "imported 4" in capsys.readouterr().out
    assert data_main(["--manifest", db, "mix", "create", "sft", "--component", "vqa=vqa:d:train:3",
                      "--component", "cap=caption:d:train:1"]) == 0
    assert data_main(["--manifest", db, "mix", "show", "sft", "--n-draws", "40", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert {s["component"]: s["epochs"] for s in shown} == {"cap": 2.5, "vqa": 7.5}
    assert data_main(["--manifest", db, "failures"]) == 0
    assert "0 failure(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        data_main(["--help"])


def test_preprocess_flow_steps_import_then_cache(folder, tmp_path, tiny_cfg):
    """The plain functions the `preprocess` flow wraps; a second run reuses the cache."""
    from flows.preprocess import PreprocessJob, run_preprocess

    db = str(tmp_path / "f.duckdb")
    job = PreprocessJob(manifest=db, source=str(folder), kind="folder", dataset="d", annotations=str(folder / "ann.csv"),
                        cache_root=str(tmp_path / "c"), x_encoder=tiny_cfg.x_encoder, splits=("train",), shard_size=2)
    done = run_preprocess(job)
    assert vars(done.imported) == {"n_in": 4, "n_imported": 4, "n_skipped": 0, "n_failed": 0}
    first = done.caches["train"]
    assert (first.n_in, first.n_cached_sources, first.n_failed_sources, first.reused) == (4, 4, 0, False)
    assert run_preprocess(job).caches["train"].reused
    con = open_manifest(db)
    shards = con.execute("SELECT count(*), sum(n_samples) FROM cache_shards").fetchall()
    con.close()
    assert shards == [(2, 4)]


# -- the recipe's preset mixes ------------------------------------------------------------------


@pytest.fixture
def with_stills(con, tmp_path):
    """``con`` plus dataset "s": two still images (PNG) with captions and labels."""
    import numpy as np

    from preprocessing.stills import write_png

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        write_png(images / f"s{i}.png", np.full((32, 48, 3), 40 * i, dtype=np.uint8))
    (images / "ann.csv").write_text("path,caption,split,label\n"
                                    + "".join(f"s{i}.png,still {i},train,cls{i}\n" for i in range(2)))
    assert import_folder(con, images, images / "ann.csv", dataset="s", default_split="train").n_imported == 2
    assert con.execute("SELECT DISTINCT kind FROM sources WHERE source_id LIKE 's%'").fetchall() == [("image",)]
    return con


def test_preset_shares_follow_the_paper():
    from preprocessing.mix import MIX_PRESETS, preset_components

    total = 25 + 2.8 + 1.8 + 2.96  # millions of samples, paper Sec. 3.2.2 (+ our 10 % of pretraining data)
    assert MIX_PRESETS["sft-paper"].shares() == pytest.approx(
        {"vqa": 25 / total, "captions": 2.8 / total, "classification": 1.8 / total, "pretraining": 2.96 / total})
    assert MIX_PRESETS["pretrain-video"].shares() == pytest.approx({"stills": 0.3, "videos": 0.7})
    image = preset_components("pretrain-image", stills_dataset="s", split="val")
    assert [(c.task, c.dataset, c.split) for c in image] == [("caption", "s", "val")]  # images only
    sft = {c.name: c for c in preset_components("sft-paper", dataset="d", stills_dataset="s")}
    assert (sft["vqa"].dataset, sft["pretraining"].dataset, sft["pretraining"].task) == ("d", "s", "caption")
    with pytest.raises(KeyError, match="pretrain-image, pretrain-video, sft-paper"):
        preset_components("paper")


def test_preset_mix_created_with_shares_and_epochs(with_stills):
    from preprocessing.mix import create_preset_mix, mix_components

    con = with_stills
    components = create_preset_mix(con, "sft-paper", mix_name="sft", dataset="d", stills_dataset="s")
    assert mix_components(con, "sft") == sorted(components, key=lambda c: c.name)  # listed by name
    assert con.execute("SELECT description FROM mixes WHERE mix_name = 'sft'").fetchone()[0].startswith("paper stage 2")
    stats = {s.component: s for s in mix_stats(con, "sft", n_draws=3256)}
    assert stats["vqa"].share == pytest.approx(25 / 32.56) and stats["vqa"].n_items == 4
    assert stats["vqa"].epochs == pytest.approx(2500 / 4)  # 3256 draws * 25/32.56 over 4 VQA pairs
    assert (stats["pretraining"].n_items, stats["pretraining"].epochs) == (2, pytest.approx(296 / 2))
    drawn = Counter(d.component for d in draw(con, "sft", 2000, seed=0))
    assert drawn["vqa"] / 2000 == pytest.approx(25 / 32.56, abs=0.03)
    assert {d.source_id for d in draw(con, "sft", 200, seed=0) if d.component == "pretraining"} == {"s0", "s1"}


def test_component_samples_queries_and_targets(with_stills):
    from preprocessing.mix import component_samples

    def samples(task, dataset="d"):
        c = MixComponent(name=task, task=task, dataset=dataset, split="train", weight=1)
        return component_samples(with_stills, c, classification_query="what is it?")

    assert samples("vqa") == [(f"v{i}", 0, "what?", f"thing {i}") for i in range(4)]
    assert samples("caption", "s") == [("s0", 0, "", "still 0"), ("s1", 0, "", "still 1")]
    assert samples("classification")[1] == ("v1", 0, "what is it?", "a cls1")
    assert samples("event") == []  # the folder import has no events
    with_stills.execute("UPDATE annotations SET text = '' WHERE source_id = 's0' AND task = 'caption'")
    assert [s[0] for s in samples("caption", "s")] == ["s1"]  # an empty target is no sample


def test_cli_preset_mixes(with_stills, tmp_path, capsys):
    db = str(tmp_path / "m.duckdb")
    with_stills.close()  # the CLI opens the file itself
    assert data_main(["mix", "presets"]) == 0
    listed = capsys.readouterr().out
    assert "sft-paper:" in listed and "share 0.768" in listed and "pretrain-image:" in listed
    assert data_main(["--manifest", db, "mix", "create", "p1b", "--preset", "pretrain-video", "--dataset", "d",
                      "--stills-dataset", "s"]) == 0
    assert "2 components" in capsys.readouterr().out
    assert data_main(["--manifest", db, "mix", "show", "p1b", "--n-draws", "100"]) == 0
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert "epochs: passes over the component's items in 100 draws" in header
    assert rows[0].split()[:2] == ["stills", "caption"] and rows[0].split()[-1] == "15.00"  # 0.3 * 100 / 2
    assert rows[1].split()[-1] == "17.50"  # videos: 0.7 * 100 / 4
    for wrong in (["--preset", "nope"], ["--component", "a=vqa:d:train:1", "--dataset", "d"],
                  ["--component", "a=vqa:d:train:1", "--preset", "sft-paper"], []):
        with pytest.raises(SystemExit):
            data_main(["--manifest", db, "mix", "create", "bad", *wrong])
    with pytest.raises(SystemExit):  # a reader needs a manifest: it does not create an empty one
        data_main(["--manifest", str(tmp_path / "none.duckdb"), "mix", "show", "p1b"])
    assert not (tmp_path / "none.duckdb").exists()
