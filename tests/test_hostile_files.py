"""kgtracin under careless and hostile use, part 1: nothing of the user's lost, nothing silently wrong.

Each test is one case of a careless or hostile user, run as a user would: real files, real signals (``kill -9``),
a real full disk (a small tmpfs). Part 2 (``test_hostile_inputs.py``) holds the bad inputs and messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from kgtracin import Checkpoint, TracIn
from kgtracin.runs import load_run

from .conftest import die_on_call
from .hostile import _cli, _explain
from .test_cli import assert_clean_error, run_cli

# -- data loss: the store ----------------------------------------------------------------------------------


def test_store_folder_with_user_files_is_refused_and_kept(distmult_run, tmp_path, capsys):
    store = tmp_path / "d"
    store.mkdir()
    (store / "thesis.txt").write_text("four years of work")
    out = tmp_path / "o.tsv"
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--store", store, "--output", out))
    assert_clean_error(code, err, "not a kgtracin store")
    assert (store / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in store.iterdir()) == ["thesis.txt"]
    assert not out.exists()


def test_store_dot_never_empties_the_working_directory(distmult_run, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    monkeypatch.chdir(work)
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--store", ".", "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, "not a kgtracin store")
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--store", ".", "--output", "o.tsv"))  # the output inside it
    assert_clean_error(code, err, "would hold the output")
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


def test_an_empty_user_folder_as_store_is_left_empty_not_deleted(distmult_run, tmp_path, capsys):
    store, out = tmp_path / "empty", tmp_path / "o.tsv"
    store.mkdir()
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--store", store, "--output", out))
    assert code == 0, err
    assert store.is_dir() and list(store.iterdir()) == []
    assert out.is_file()


def test_removing_a_store_keeps_files_the_user_put_in_it(distmult_run, tmp_path, capsys, monkeypatch):
    store, out = tmp_path / "store", tmp_path / "o.tsv"
    die_on_call(monkeypatch, 2)
    code, _, _ = run_cli(capsys, *_explain(distmult_run, "--shard-size", "300", "--store", store, "--output", out))
    assert code != 0 and len(list(store.glob("shard_*.pt"))) == 1
    (store / "mine.txt").write_text("mine")
    monkeypatch.undo()
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--shard-size", "300", "--store", store, "--output", out))
    assert code == 0, err
    assert sorted(p.name for p in store.iterdir()) == ["mine.txt"]


def test_a_second_process_on_the_same_store_is_refused(distmult_run, tmp_path):
    out = tmp_path / "o.tsv"
    store = tmp_path / ".o.tsv.kgtracin-store"  # the default store of --output o.tsv
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from kgtracin.runners import StoreFolder; "
            f"held = StoreFolder({str(store)!r}); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _cli(*_explain(distmult_run, "--candidates", "all", "--output", out))
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert "in use by another kgtracin process" in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()
    finally:
        holder.communicate("")
    result = _cli(*_explain(distmult_run, "--candidates", "all", "--output", out))  # the other has ended: store free
    assert result.returncode == 0, result.stderr
    assert not store.exists()


def test_a_shard_saved_for_other_work_is_never_loaded(distmult_run, tmp_path):
    loaded = load_run(distmult_run)
    test = loaded.splits["testing"][:2]
    store = tmp_path / "store"
    TracIn.from_run(distmult_run, progress=False, shard_size=400, loss="bce").influence(test, top_k=3, store=store)
    assert len(list(store.glob("shard_*.pt"))) == 4
    second = TracIn.from_run(distmult_run, progress=False, shard_size=400, loss="softmax")
    # as if another process had written its fingerprint over the bce store's: the shards are still bce's
    (store / "store.json").write_text(json.dumps(second._fingerprint(test, 3), sort_keys=True))
    resumed = second.influence(test, top_k=3, store=store)
    fresh = TracIn.from_run(distmult_run, progress=False, shard_size=400, loss="softmax").influence(test, top_k=3)
    assert torch.equal(resumed.proponents.indices, fresh.proponents.indices)
    assert torch.equal(resumed.proponents.scores, fresh.proponents.scores)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_while_saving_a_shard_leaves_nothing_a_rerun_trips_over(distmult_run, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        out = tmp_path / "o.tsv"
        result = _cli(*_explain(distmult_run, "--shard-size", "200", "--store", disk / "store", "--output", out))
        assert result.returncode != 0
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
        assert not list((disk / "store").glob(".shard_*.tmp")) and not out.exists()
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        result = _cli(*_explain(distmult_run, "--shard-size", "200", "--store", disk / "store", "--output", out))
        assert result.returncode == 0, result.stderr
        assert not (disk / "store").exists() and out.is_file()
    finally:
        subprocess.run(["umount", str(disk)])


# -- data loss: outputs ------------------------------------------------------------------------------------


def test_output_may_not_overwrite_the_test_file(distmult_run, tmp_path, capsys):
    loaded = load_run(distmult_run)
    query = tmp_path / "q.tsv"
    content = "\n".join("\t".join(row) for row in loaded.labels.to_labels(loaded.splits["testing"][:2])) + "\n"
    query.write_text(content)
    code, _, err = run_cli(capsys, "explain", distmult_run, "--test-file", query, "--output", query)
    assert_clean_error(code, err, "would overwrite the test file")
    assert query.read_text() == content


def test_output_may_not_land_inside_the_run(distmult_run_copy, tmp_path, capsys):
    target = distmult_run_copy / "triples" / "testing.tsv"
    before = target.read_bytes()
    code, _, err = run_cli(capsys, *_explain(distmult_run_copy, "--output", target))
    assert_clean_error(code, err, "would write inside the run directory")
    assert target.read_bytes() == before
    load_run(distmult_run_copy)  # still a distmult_run


def test_an_existing_file_is_overwritten_only_when_kgtracin_wrote_it(distmult_run, tmp_path, capsys):
    theirs = tmp_path / "results.tsv"
    theirs.write_text("my\thand-made\ttable\n")
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", theirs))
    assert_clean_error(code, err, "was not written by kgtracin")
    assert theirs.read_text() == "my\thand-made\ttable\n"
    ours = tmp_path / "ours.tsv"
    for top_k in ("2", "3"):  # kgtracin's own earlier result is replaced
        code, _, err = run_cli(
            capsys, "explain", distmult_run, "--split", "test", "--limit", "2", "--top-k", top_k, "--output", ours
        )
        assert code == 0, err
    assert pd.read_csv(ours, sep="\t")["rank"].max() == 3


def test_killed_train_leaves_a_staging_folder_the_next_train_removes(tmp_path):
    output = tmp_path / "runs" / "nations"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kgtracin",
            "train",
            "--dataset",
            "nations",
            "--model",
            "DistMult",
            "--embedding-dim",
            "8",
            "--epochs",
            "100000",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            staged = list(output.parent.glob(".nations.*")) if output.parent.exists() else []
            if staged and list((staged[0] / "checkpoints").glob("*.pt")):
                break
            time.sleep(0.2)
        else:
            pytest.fail("train never staged a checkpoint")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not output.exists()
    assert len(staged) == 1 and staged[0].is_dir()  # what kill -9 leaves: a hidden, owner-marked folder
    (output.parent / ".nations.mine").mkdir()  # a user's folder that looks alike, without kgtracin's mark
    result = _cli(
        "train",
        "--dataset",
        "nations",
        "--model",
        "DistMult",
        "--embedding-dim",
        "8",
        "--epochs",
        "1",
        "--output",
        output,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output.parent.iterdir()) == [".nations.mine", "nations"]
    load_run(output)


# -- silently wrong results --------------------------------------------------------------------------------


def test_nan_weights_are_refused_in_one_line(distmult_run_copy, tmp_path, capsys):
    checkpoint = next((distmult_run_copy / "checkpoints").iterdir())
    payload = torch.load(checkpoint, weights_only=True)
    state = payload["state_dict"]  # a kgtracin checkpoint file (CheckpointCallback's format)
    name = next(iter(state))
    state[name][0] = float("nan")
    torch.save(payload, checkpoint)
    for method in ("fast", "vmap"):
        out = tmp_path / f"{method}.tsv"
        code, _, err = run_cli(capsys, *_explain(distmult_run_copy, "--method", method, "--output", out))
        assert_clean_error(code, err, "NaN or infinite", checkpoint.name)
        assert "not linear" not in err and not out.exists()


def test_top_k_above_n_labels_by_sign(distmult_run, tmp_path, capsys):
    out = tmp_path / "all.tsv"
    code, _, err = run_cli(
        capsys,
        "explain",
        distmult_run,
        "--split",
        "test",
        "--limit",
        "1",
        "--top-k",
        "100000",
        "--loss",
        "bce",
        "--candidates",
        "all",
        "--output",
        out,
    )
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    loaded = load_run(distmult_run)
    scores = TracIn.from_run(distmult_run, progress=False, loss="bce").scores(loaded.splits["testing"][:1])[0]
    proponents, opponents = frame[frame["kind"] == "proponent"], frame[frame["kind"] == "opponent"]
    assert (proponents["influence"] > 0).all() and (opponents["influence"] < 0).all()
    assert len(proponents) == int((scores > 0).sum()) and len(opponents) == int((scores < 0).sum())
    assert sorted(proponents["train_index"]) == sorted((scores > 0).nonzero().view(-1).tolist())
    assert list(proponents["rank"]) == list(range(1, len(proponents) + 1))


def test_callback_in_the_pipeline_folder_itself_is_found(tmp_path):
    from pykeen.pipeline import pipeline

    from kgtracin import CheckpointCallback

    folder = tmp_path / "run"
    callback = CheckpointCallback(folder, every=1)
    result = pipeline(
        dataset="nations",
        model="DistMult",
        model_kwargs=dict(embedding_dim=8),
        random_seed=1,
        optimizer_kwargs=dict(lr=0.03),
        training_kwargs=dict(num_epochs=3, batch_size=512, use_tqdm=False, callbacks=callback),
        evaluation_kwargs=dict(use_tqdm=False, batch_size=256),
    )
    result.save_to_directory(folder)
    tracin = TracIn.from_run(folder, trust_pickle=True, progress=False)
    assert [Path(c.state).name for c in tracin.checkpoints] == ["epoch_00001.pt", "epoch_00002.pt", "epoch_00003.pt"]
    assert [c.learning_rate for c in tracin.checkpoints] == [0.03] * 3


def test_no_checkpoints_warns_in_the_manifest_and_the_api(distmult_run_copy, caplog):
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    manifest["checkpoints"] = []
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        loaded = load_run(distmult_run_copy)
    assert "no checkpoints" in caplog.text and "learning rate 1.0" in caplog.text
    assert [c.learning_rate for c in loaded.checkpoints] == [1.0]
    with pytest.warns(UserWarning, match="learning rate 1.0"):
        TracIn(loaded.model, loaded.training_triples, progress=False)


def test_tracin_leaves_the_callers_model_as_it_was(distmult_run):
    from pykeen.models import DistMult
    from pykeen.triples import TriplesFactory

    loaded = load_run(distmult_run)
    factory = TriplesFactory(loaded.training_triples, loaded.labels.entity_to_id, loaded.labels.relation_to_id)
    model = DistMult(
        triples_factory=factory, embedding_dim=8, random_seed=0, entity_representations_kwargs=dict(unique=True)
    )
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tracin = TracIn(model, loaded.training_triples, [Checkpoint(model.state_dict(), 0.1)], progress=False)
    tracin.scores(loaded.splits["testing"][:2])
    assert model.training
    assert model.entity_representations[0].unique is True
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_entities_never_seen_in_training_are_noted(tmp_path, capsys):
    from pykeen.datasets import Nations

    ds = Nations()
    train = ds.training.label_triples(ds.training.mapped_triples)
    test = ds.training.label_triples(ds.testing.mapped_triples)[:3]
    lonely = test[0][0]
    keep = [row for row in train if lonely not in (row[0], row[2])]
    (tmp_path / "train.tsv").write_text("\n".join("\t".join(r) for r in keep) + "\n")
    (tmp_path / "test.tsv").write_text("\n".join("\t".join(r) for r in test) + "\n")
    run_dir = tmp_path / "run"
    code, stdout, err = run_cli(
        capsys,
        "train",
        "--training",
        tmp_path / "train.tsv",
        "--testing",
        tmp_path / "test.tsv",
        "--model",
        "DistMult",
        "--epochs",
        "2",
        "--embedding-dim",
        "8",
        "--output",
        run_dir,
    )
    assert code == 0, err
    unseen = sum(lonely in (row[0], row[2]) for row in test)
    assert f"{unseen} of them mention an entity that never occurs in training" in stdout
    out = tmp_path / "o.tsv"
    code, stdout, err = run_cli(capsys, "explain", run_dir, "--split", "test", "--output", out)
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t", keep_default_na=False).groupby("test_index").first()
    noted = frame[frame["test_note"] != ""]
    assert len(noted) == unseen
    assert all(lonely in (row.test_head, row.test_tail) for row in noted.itertuples())
    assert all("never in training" in note for note in noted["test_note"])
    assert f"note: {unseen} test triple(s) mention an entity that never occurs in training" in stdout
