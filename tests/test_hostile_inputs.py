"""kgtracin under careless and hostile use, part 2: every bad input in one line, and messages that lead right.

Real permissions are tested as root without capabilities (``setpriv``), so that file modes bind. Part 1
(``test_hostile_files.py``) holds data loss and silently wrong results.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from kgtracin import KGTracinError, TracIn
from kgtracin.runs import load_run

from .hostile import _cli, _explain
from .test_cli import assert_clean_error, run_cli

# -- bad options: one line, nothing written ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--learning-rate", "0"], ["--learning-rate", "positive"]),
        (["--learning-rate", "-1"], ["--learning-rate", "positive"]),
        (["--learning-rate", "nan"], ["--learning-rate", "positive"]),
        (["--k", "100000"], ["--k 100000", "training triples"]),
        (["--noisy", "0.0001", "--no-deletion"], ["--noisy", "corrupts no triple"]),
    ],
)
def test_evaluate_refuses_options_it_would_misuse(distmult_run, tmp_path, capsys, args, words):
    out = tmp_path / "eval"
    code, _, err = run_cli(capsys, "evaluate", distmult_run, "--output", out, *args)
    assert_clean_error(code, err, *words)
    assert not out.exists()


def test_limit_without_split_is_refused(distmult_run, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "explain",
        distmult_run,
        "--triple",
        "brazil",
        "embassy",
        "usa",
        "--limit",
        "3",
        "--output",
        tmp_path / "o.tsv",
    )
    assert_clean_error(code, err, "--limit goes with --split")


def test_cuda_on_a_cpu_build_is_one_line(distmult_run, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--device", "cuda", "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, "cuda")
    with pytest.raises(KGTracinError, match="CUDA"):
        TracIn.from_run(distmult_run, device="cuda")


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.update(splits=["triples/training.tsv"]), ["'splits'", "object"]),
        (lambda m: m["checkpoints"][0].update(learning_rate="0.01"), ["learning_rate", "number"]),
        (lambda m: m.update(model="NoSuchModel"), ["unknown model", "NoSuchModel"]),
        (lambda m: m.update(inverse_triples="yes"), ["inverse_triples", "true or false"]),
        (lambda m: m.update(model_kwargs=[1]), ["model_kwargs"]),
        (lambda m: m["checkpoints"][0].update(file="../../etc/passwd"), ["outside the run directory"]),
        (lambda m: m.pop("final_model"), ["final_model"]),
    ],
)
def test_a_malformed_manifest_is_named_field_by_field(distmult_run_copy, tmp_path, capsys, change, words):
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    change(manifest)
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, *_explain(distmult_run_copy, "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, *words)


@pytest.mark.parametrize("victim", ["manifest.json", "entities.tsv", "checkpoints"])
def test_unreadable_run_files(distmult_run_copy, tmp_path, victim):
    target = distmult_run_copy / victim
    if victim == "checkpoints":
        target = next(target.iterdir())
    target.chmod(0)
    result = _cli(*_explain(distmult_run_copy, "--output", tmp_path / "o.tsv"), unprivileged=True)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, lines
    assert "ermission denied" in lines[0] and target.name in lines[0]
    assert not (tmp_path / "o.tsv").exists()


def test_an_unwritable_output_folder(distmult_run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    result = _cli(*_explain(distmult_run, "--output", locked / "o.tsv"), unprivileged=True)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: ") and "not writable" in result.stderr
    assert list(locked.iterdir()) == []


def test_an_output_name_too_long_is_refused_before_any_work(distmult_run, tmp_path, capsys, monkeypatch):
    from kgtracin.scoring import Scorer

    for name in ("run_range", "run_pairs"):  # all candidates, and the neighbourhood (explain's default)
        monkeypatch.setattr(Scorer, name, lambda *a, **k: pytest.fail("computed before refusing the name"))
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", tmp_path / ("x" * 300 + ".tsv")))
    assert_clean_error(code, err, "longer than this file system allows")
    assert list(tmp_path.iterdir()) == []


def test_a_long_but_valid_output_name_works(distmult_run, tmp_path, capsys):
    out = tmp_path / ("y" * 240 + ".tsv")  # its temporary and store names must not pass the limit either
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", out))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def _fake_evaluation(folder: Path, appear: bool):
    def run_deletion(factory, splits, config):
        if appear:
            folder.mkdir()
            (folder / "theirs.txt").write_text("theirs")
        return {
            "mode": "isolated",
            "retrain": {
                "model": "DistMult",
                "embedding_dim": 8,
                "constrained": False,
                "epochs": 1,
                "learning_rate": 0.1,
                "checkpoints": 1,
            },
            "seeds": [],
            "table": [{"arm": "NH-1", "k": 1, "pd": 50.0, "tc": 10.0, "targets": 2}],
        }

    return run_deletion


def test_evaluate_output_appearing_during_the_run_keeps_both(distmult_run, tmp_path, capsys, monkeypatch):
    import kgtracin.evaluation as evaluation

    out = tmp_path / "eval"
    monkeypatch.setattr(evaluation, "run_deletion", _fake_evaluation(out, appear=True))
    code, _, err = run_cli(capsys, "evaluate", distmult_run, "--output", out)
    assert_clean_error(code, err, "appeared during the evaluation", "eval-1")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in (tmp_path / "eval-1").iterdir()) == [
        "evaluation.json",
        "evaluation.md",
        "evaluation.png",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_evaluate_on_a_full_disk_is_one_line_and_leaves_nothing(distmult_run, tmp_path, capsys, monkeypatch):
    import kgtracin.evaluation as evaluation

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        monkeypatch.setattr(evaluation, "run_deletion", _fake_evaluation(disk / "eval", appear=False))
        code, _, err = run_cli(capsys, "evaluate", distmult_run, "--output", disk / "eval")
        assert_clean_error(code, err, "No space left on device")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_large_test_file_is_read_as_a_stream(distmult_run, tmp_path):
    import tracemalloc

    from kgtracin.triples import read_triple_ids

    loaded = load_run(distmult_run)
    rows = ["\t".join(row) for row in loaded.labels.to_labels(loaded.training_triples)]
    big = tmp_path / "big.tsv"
    with open(big, "w") as handle:
        for _ in range(400):
            handle.write("\n".join(rows) + "\n")
    count = 400 * len(rows)
    tracemalloc.start()
    ids = read_triple_ids(big, loaded.labels)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ids.shape == (count, 3) and torch.equal(ids[: len(rows)], loaded.training_triples)
    assert peak < 4 * 24 * count + (8 << 20), (peak, big.stat().st_size)  # ids, not strings: 24 bytes a triple
    with open(big, "a") as handle:
        handle.write("brazil\tno-such-relation\tusa\n")
    with pytest.raises(KGTracinError, match=f"line {count + 1}: unknown relation label"):
        read_triple_ids(big, loaded.labels)


def test_a_bug_is_one_line_without_v_and_a_traceback_with_it(distmult_run, tmp_path, capsys, monkeypatch):
    from kgtracin.cli import main
    from kgtracin.scoring import Scorer

    def broken(*args, **kwargs):
        raise RuntimeError("an index went wrong")

    for name in ("run_range", "run_pairs"):  # all candidates, and the neighbourhood (explain's default)
        monkeypatch.setattr(Scorer, name, broken)
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, "internal error", "RuntimeError", "an index went wrong", "-v")
    with pytest.raises(RuntimeError, match="an index went wrong"):
        main([*map(str, _explain(distmult_run, "--output", tmp_path / "o.tsv")), "-v"])
    for name in ("run_range", "run_pairs"):
        monkeypatch.setattr(Scorer, name, lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, "out of memory")


# -- messages that lead the user right ---------------------------------------------------------------------


def test_a_folder_fifo_or_symlink_loop_is_named_as_such(distmult_run, tmp_path, capsys):
    fifo, loop = tmp_path / "fifo", tmp_path / "loop"
    os.mkfifo(fifo)
    os.symlink(tmp_path / "loop2", loop)
    os.symlink(loop, tmp_path / "loop2")
    for path, words in ((tmp_path, "is a folder"), (fifo, "not a regular file"), (loop, "symbolic links")):
        code, _, err = run_cli(capsys, "explain", distmult_run, "--test-file", path, "--output", tmp_path / "o.tsv")
        assert_clean_error(code, err, words)


def test_train_creates_missing_parent_folders(tmp_path, capsys):
    code, _stdout, err = run_cli(
        capsys,
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
        tmp_path / "runs" / "deep" / "nations",
    )
    assert code == 0, err
    load_run(tmp_path / "runs" / "deep" / "nations")


def test_bom_header_and_wrong_case(distmult_run, tmp_path, capsys):
    loaded = load_run(distmult_run)
    h, r, t = loaded.labels.to_labels(loaded.splits["testing"][:1])[0]
    query = tmp_path / "q.tsv"
    query.write_bytes(b"\xef\xbb\xbf" + f"{h}\t{r}\t{t}\n".encode())
    code, _, err = run_cli(capsys, "explain", distmult_run, "--test-file", query, "--output", tmp_path / "o.tsv")
    assert code == 0, err
    query.write_text(f"head\trelation\ttail\n{h}\t{r}\t{t}\n")
    code, _, err = run_cli(capsys, "explain", distmult_run, "--test-file", query, "--output", tmp_path / "o.tsv")
    assert_clean_error(code, err, "looks like a header line")
    query.write_text(f"{h.upper()}\t{r}\t{t}\n")
    code, _, err = run_cli(capsys, "explain", distmult_run, "--test-file", query, "--output", tmp_path / "o.tsv")
    assert_clean_error(code, err, f"did you mean '{h}'")
    code, _, err = run_cli(capsys, "explain", distmult_run, "--triple", h.upper(), r, t, "--output", tmp_path / "o.tsv")
    assert_clean_error(code, err, f"did you mean '{h}'")


def test_train_refuses_a_header_line(tmp_path, capsys):
    (tmp_path / "t.tsv").write_text("head\trelation\ttail\na\tr\tb\nb\tr\tc\n")
    code, _, err = run_cli(capsys, "train", "--training", tmp_path / "t.tsv", "--output", tmp_path / "run")
    assert_clean_error(code, err, "looks like a header line")


def test_a_triple_short_of_a_value_says_so(distmult_run, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "explain", distmult_run, "--triple", "brazil", "embassy", "--output", tmp_path / "o.tsv"
    )
    assert_clean_error(code, err, "--triple", "three values", "--output")


def test_option_names_in_errors_are_the_ones_typed(distmult_run, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "explain", distmult_run, "--predict", "brazil", "embassy", "--n", "0", "--output", tmp_path / "o.tsv"
    )
    assert_clean_error(code, err, "--n")
    assert "num-predictions" not in err


def test_trust_pickle_is_honoured_for_a_kgtracin_run(distmult_run_copy, tmp_path, capsys):
    loaded = load_run(distmult_run_copy)
    checkpoint = next((distmult_run_copy / "checkpoints").iterdir())
    model = loaded.model
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    torch.save(model, checkpoint)  # a whole pickled model as a checkpoint
    code, _, err = run_cli(capsys, *_explain(distmult_run_copy, "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, "pickled", "--trust-pickle")
    code, _, err = run_cli(capsys, *_explain(distmult_run_copy, "--trust-pickle", "--output", tmp_path / "o.tsv"))
    assert code == 0, err


def test_trust_pickle_help_says_what_it_unpickles():
    result = _cli("explain", "--help")
    text = " ".join(result.stdout.split())
    assert "--checkpoint-dir" in text and "which can run code" in text and "UNSAFE" in text


# -- small things a user notices ---------------------------------------------------------------------------


def test_outputs_follow_the_umask(distmult_run, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "o.tsv"
        result = _cli(*_explain(distmult_run, "--output", out))
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        folder = tmp_path / "run"
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
            folder,
        )
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        assert stat.S_IMODE((folder / "manifest.json").stat().st_mode) == 0o644
        assert stat.S_IMODE((folder / "checkpoints").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_predict_head_reports_the_head_rank(distmult_run, tmp_path, capsys):
    from kgtracin.predictions import KnownTriples

    loaded = load_run(distmult_run)
    _h, r, t = loaded.labels.to_labels(loaded.splits["testing"][:1])[0]
    out = tmp_path / "o.tsv"
    code, stdout, err = run_cli(capsys, "explain", distmult_run, "--predict-head", r, t, "--n", "2", "--output", out)
    assert code == 0, err
    assert "among all heads" in stdout and "among all tails" not in stdout
    frame = pd.read_csv(out, sep="\t").groupby("test_index").first()
    assert "test_head_rank" in frame.columns and "test_rank" not in frame.columns
    known = KnownTriples(loaded.splits.values())
    ids = loaded.labels.to_ids(frame[["test_head", "test_relation", "test_tail"]].to_numpy())
    with torch.no_grad():
        scores = loaded.model.predict_h(ids[:1, 1:])[0]
    rival = [e for e in range(loaded.model.num_entities) if e not in known.heads(*ids[0, 1:].tolist()).tolist()]
    own = float(scores[ids[0, 0]])
    slack = 1e-5 * max(1.0, abs(own))  # kgtracin scores DistMult by matrix products: the same up to rounding
    surely = 1 + sum(float(scores[e]) > own + slack for e in rival if e != ids[0, 0])
    maybe = 1 + sum(float(scores[e]) > own - slack for e in rival if e != ids[0, 0])
    assert surely <= frame["test_head_rank"].iloc[0] <= maybe


def test_printed_table_says_how_much_it_shows_and_the_loss(distmult_run, tmp_path, capsys):
    out = tmp_path / "o.tsv"
    code, stdout, err = run_cli(
        capsys, "explain", distmult_run, "--split", "test", "--limit", "1", "--top-k", "7", "--output", out
    )
    assert code == 0, err
    assert "TracIn loss: softmax" in stdout and "CrossEntropyLoss" in stdout
    assert "first 3 proponents and opponents" in stdout and "all 7" in stdout
    frame = pd.read_csv(out, sep="\t")
    assert frame["test_rank"].dtype.kind == "i"


def test_help_starts_without_torch_or_pykeen():
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kgtracin.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pykeen', 'pandas') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip().splitlines()[-1] == "[]", probe.stderr


def test_train_shows_progress_within_an_epoch(tmp_path):
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
        "--batch-size",
        "64",
        "--output",
        tmp_path / "run",
    )
    assert result.returncode == 0, result.stderr
    assert "Training batches" in result.stderr  # PyKEEN's per-batch bar, with its rate and time left


def test_any_pykeen_dataset_by_name_and_a_failed_download_in_one_line(tmp_path, capsys):
    from kgtracin.datasets import dataset_names, labelled_splits

    assert {"nations", "umls", "wn18rr", "fb15k237", "codexsmall", "hetionet"} <= set(dataset_names())
    assert labelled_splits("Kinships")["training"].shape[1] == 3  # shipped, any case
    env = {
        "PYSTOW_HOME": str(tmp_path / "cache"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }  # offline, whatever this machine can reach
    result = _cli("train", "--dataset", "wn18rr", "--output", tmp_path / "run", env_extra=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load dataset 'wn18rr'"), lines
    assert str(tmp_path / "cache") in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(capsys, "train", "--dataset", "no-such-graph", "--output", tmp_path / "run")
    assert_clean_error(code, err, "unknown dataset", "wn18rr")


# -- found by trying more ----------------------------------------------------------------------------------


def test_a_file_starting_with_blank_space_is_not_taken_for_empty(distmult_run, tmp_path, capsys):
    theirs = tmp_path / "ws.tsv"
    theirs.write_text("\n" * 5000 + "IMPORTANT DATA\n")
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", theirs))
    assert_clean_error(code, err, "was not written by kgtracin")
    assert theirs.read_text().endswith("IMPORTANT DATA\n")


def test_symbolic_links_are_refused_as_outputs_and_stores(distmult_run, tmp_path, capsys):
    first = tmp_path / "first.tsv"
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", first))
    assert code == 0, err
    link = tmp_path / "link.tsv"
    link.symlink_to(first)
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", link))
    assert_clean_error(code, err, "symbolic link")
    assert link.is_symlink()
    (tmp_path / "empty").mkdir()
    (tmp_path / "store-link").symlink_to(tmp_path / "empty")
    code, _, err = run_cli(
        capsys, *_explain(distmult_run, "--store", tmp_path / "store-link", "--output", tmp_path / "o.tsv")
    )
    assert_clean_error(code, err, "symbolic link")
    assert list((tmp_path / "empty").iterdir()) == []
    train = ["train", "--dataset", "nations", "--model", "DistMult", "--epochs", "1"]
    for command in (train, ["evaluate", distmult_run]):
        code, _, err = run_cli(capsys, *command, "--output", tmp_path / "store-link")
        assert_clean_error(code, err, "symbolic link")
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize(
    "store, output, words",
    [
        ("same.tsv", "same.tsv", "would hold the output"),
        ("st", "st/x.tsv", "would hold the output"),
        ("RUN/checkpoints/st", "o.tsv", "inside an input folder"),
    ],
)
def test_a_store_is_refused_where_it_would_clash(
    distmult_run_copy, tmp_path, capsys, monkeypatch, store, output, words
):
    from kgtracin.scoring import Scorer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Scorer, "run_range", lambda *a, **k: pytest.fail("computed before refusing the store"))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(
        capsys,
        *_explain(distmult_run_copy, "--store", store.replace("RUN", str(distmult_run_copy)), "--output", output),
    )
    assert_clean_error(code, err, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (distmult_run_copy / "checkpoints" / "st").exists()


def test_parents_named_through_dot_dot_are_not_created(distmult_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", "nx1/../o.tsv"))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tsv"]


def test_jsonl_keeps_every_digit(distmult_run, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--candidates", "all", "--output", out))
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    loaded = load_run(distmult_run)
    api = TracIn.from_run(distmult_run, progress=False).influence(loaded.splits["testing"][:2], top_k=3)
    proponents = [r["influence"] for r in records if r["kind"] == "proponent"]
    assert proponents == api.proponents.scores.double().reshape(-1).tolist()


def test_a_checkpoint_replaced_in_place_is_other_work(distmult_run_copy, tmp_path):
    loaded = load_run(distmult_run_copy)
    test = loaded.splits["testing"][:2]
    store = tmp_path / "store"
    TracIn.from_run(distmult_run_copy, progress=False, shard_size=400).influence(test, top_k=3, store=store)
    first, second = sorted((distmult_run_copy / "checkpoints").iterdir())
    stat_before = second.stat()
    shutil.copyfile(first, second)  # same size, same time: only the content tells
    os.utime(second, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    resumed = TracIn.from_run(distmult_run_copy, progress=False, shard_size=400).influence(test, top_k=3, store=store)
    fresh = TracIn.from_run(distmult_run_copy, progress=False, shard_size=400).influence(test, top_k=3)
    assert torch.equal(resumed.proponents.scores, fresh.proponents.scores)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--seed", "-1"], ["--seed"]),
        (["--learning-rate", "inf"], ["--learning-rate"]),
        (["--batch-size", "99999999999999999999"], ["--batch-size"]),
        (["--model", "ConvE", "--embedding-dim", "7"], ["cannot build model ConvE"]),
    ],
)
def test_train_refuses_settings_it_cannot_use(tmp_path, capsys, args, words):
    code, _, err = run_cli(
        capsys,
        "train",
        "--dataset",
        "nations",
        "--model",
        "DistMult",
        "--epochs",
        "1",
        *args,
        "--output",
        tmp_path / "run",
    )
    assert_clean_error(code, err, *words)
    assert not (tmp_path / "run").exists()


def _edit_manifest(run_dir, change):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    change(manifest)
    (run_dir / "manifest.json").write_text(json.dumps(manifest).replace('"HUGE"', "1" + "0" * 400))


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m["model_kwargs"].update(embedding_dim=-1), ["cannot build model"]),
        (lambda m: m["model_kwargs"].update(embedding_dim=0), ["cannot build model"]),
        (lambda m: m["model_kwargs"].update(loss="NoSuchLoss"), ["cannot build model"]),
        (lambda m: m["checkpoints"][0].update(learning_rate="HUGE"), ["checkpoint 1 learning_rate"]),
        (lambda m: m.update(seed=-5), ["'seed'"]),
        (lambda m: m.update(final_model="checkpoints"), ["is a folder"]),
        (lambda m: m["checkpoints"][0].update(file="checkpoints"), ["is a folder"]),
    ],
)
def test_a_tampered_manifest_is_one_line(distmult_run_copy, tmp_path, capsys, change, words):
    _edit_manifest(distmult_run_copy, change)
    code, _, err = run_cli(capsys, *_explain(distmult_run_copy, "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, *words)


@pytest.mark.parametrize(
    "damage, words",
    [
        ("meta", ["meta device"]),
        ("complex", ["complex"]),
        ("nan-final", ["NaN or infinite", "model.pt"]),
        ("huge", ["overflow"]),
        ("random-final", ["corrupt"]),
    ],
)
def test_damaged_weights_are_one_line(distmult_run_copy, tmp_path, capsys, damage, words):
    checkpoint = sorted((distmult_run_copy / "checkpoints").iterdir())[0]
    state = torch.load(checkpoint, weights_only=True)["state_dict"]  # a CheckpointCallback file
    name = next(k for k, v in state.items() if v.is_floating_point())
    if damage == "meta":
        torch.save({k: v.to("meta") for k, v in state.items()}, checkpoint)
    elif damage == "complex":
        torch.save({k: v.to(torch.complex64) if k == name else v for k, v in state.items()}, checkpoint)
    elif damage == "nan-final":
        final = torch.load(distmult_run_copy / "model.pt", weights_only=True)
        final[name][0] = float("nan")
        torch.save(final, distmult_run_copy / "model.pt")
    elif damage == "huge":
        torch.save({k: torch.full_like(v, 1e30) if v.is_floating_point() else v for k, v in state.items()}, checkpoint)
    else:
        noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
        (distmult_run_copy / "model.pt").write_bytes(bytes(noise.tolist()).replace(b"\x80", b"\x00"))
    code, _, err = run_cli(capsys, *_explain(distmult_run_copy, "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, *words)
    assert "pickled" not in err and "Warning" not in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "run") == []


def test_more_misleading_messages(distmult_run, tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("mine")
    code, _, err = run_cli(
        capsys, *_explain(distmult_run, "--checkpoint-dir", tmp_path / "precious.txt", "--output", tmp_path / "o.tsv")
    )
    assert_clean_error(code, err, "is a file, not a folder")
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--output", tmp_path / ".tsv"))
    assert_clean_error(code, err, "needs a name before its suffix")
    code, _, err = run_cli(capsys, *_explain(distmult_run, "--learning-rate", "5", "--output", tmp_path / "o.tsv"))
    assert_clean_error(code, err, "--learning-rate", "record their own")
    code, _, err = run_cli(
        capsys,
        "explain",
        distmult_run,
        "--triple",
        "brazil",
        "embassy",
        "usa",
        "--n",
        "3",
        "--output",
        tmp_path / "o.tsv",
    )
    assert_clean_error(code, err, "--n goes with --predict")
