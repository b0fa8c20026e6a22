"""The command line end to end on Nations, and every bad input: one ``error:`` line, no file left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from kgtracin import TracIn
from kgtracin.cli import main
from kgtracin.runs import load_run

EXPLAIN_COLUMNS = [
    "test_head",
    "test_relation",
    "test_tail",
    "kind",
    "rank",
    "train_head",
    "train_relation",
    "train_tail",
    "influence",
]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``kgtracin ARGS`` in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_clean_error(code: int, err: str, *words: str) -> None:
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


# -- end to end -----------------------------------------------------------------------------------------


def test_explain_split_tsv_matches_api(nations_run, tmp_path, capsys):
    out = tmp_path / "influence.tsv"
    code, stdout, err = run_cli(
        capsys, "explain", nations_run, "--split", "test", "--limit", "3", "--top-k", "4", "--output", out
    )
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    assert all(column in frame.columns for column in EXPLAIN_COLUMNS)
    assert len(frame) == 3 * 2 * 4
    assert set(frame["kind"]) == {"proponent", "opponent"}
    run = load_run(nations_run)
    api = TracIn.from_run(nations_run, progress=False).influence(run.splits["testing"][:3], top_k=4)
    props = frame[frame["kind"] == "proponent"]["influence"].to_numpy().reshape(3, 4)
    assert torch.allclose(torch.from_numpy(props), api.proponents.scores.double(), rtol=1e-6)
    assert "proponent" in stdout and "opponent" in stdout
    h, r, t = run.labels.to_labels(run.splits["testing"][:1])[0]
    assert f"{h}  {r}  {t}" in stdout


def test_explain_triples_jsonl(nations_run, tmp_path, capsys):
    run = load_run(nations_run)
    (h, r, t), (h2, r2, t2) = run.labels.to_labels(run.splits["testing"][:2])
    out = tmp_path / "influence.jsonl"
    code, _, err = run_cli(
        capsys,
        "explain",
        nations_run,
        "--triple",
        h,
        r,
        t,
        "--triple",
        h2,
        r2,
        t2,
        "--top-k",
        "2",
        "--parameters",
        "interaction.hr1d.*",
        "--output",
        out,
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 * 2 * 2
    assert {rec["test_head"] for rec in records} == {h, h2}
    assert all(set(EXPLAIN_COLUMNS) <= set(rec) for rec in records)


def test_explain_test_file_and_methods_agree(nations_run, tmp_path, capsys):
    run = load_run(nations_run)
    test_file = tmp_path / "test.tsv"
    test_file.write_text("\n".join("\t".join(row) for row in run.labels.to_labels(run.splits["testing"][:2])) + "\n")
    frames = {}
    for method in ("fast", "vmap"):
        out = tmp_path / f"{method}.tsv"
        code, _, err = run_cli(
            capsys,
            "explain",
            nations_run,
            "--test-file",
            test_file,
            "--method",
            method,
            "--parameters",
            "interaction.*",
            "--top-k",
            "3",
            "--output",
            out,
        )
        assert code == 0, err
        frames[method] = pd.read_csv(out, sep="\t")
    assert (frames["fast"]["train_index"] == frames["vmap"]["train_index"]).all()
    assert torch.allclose(
        torch.tensor(frames["fast"]["influence"].to_numpy()),
        torch.tensor(frames["vmap"]["influence"].to_numpy()),
        rtol=1e-4,
    )


@pytest.mark.parametrize("top_k", [None, 5])
def test_self_influence(nations_run, tmp_path, capsys, top_k):
    out = tmp_path / "self.tsv"
    args = ["self-influence", nations_run, "--output", out] + ([] if top_k is None else ["--top-k", top_k])
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    assert list(frame.columns) == ["rank", "head", "relation", "tail", "train_index", "self_influence"]
    run = load_run(nations_run)
    assert len(frame) == (len(run.training_triples) if top_k is None else top_k)
    assert list(frame["rank"]) == list(range(1, len(frame) + 1))
    assert (frame["self_influence"].diff().dropna() <= 0).all()
    expected = TracIn.from_run(nations_run, progress=False, normalize=None).self_influence().max()
    assert abs(frame["self_influence"].iloc[0] - float(expected)) <= 1e-6 * abs(float(expected))


def test_train_from_files_and_manifest(tmp_path, capsys):
    from pykeen.datasets import Nations

    ds = Nations()
    for name in ("training", "testing"):
        labeled = ds.training.label_triples(getattr(ds, name).mapped_triples)
        (tmp_path / f"{name}.tsv").write_text("\n".join("\t".join(row) for row in labeled) + "\n")
    run_dir = tmp_path / "run"
    code, _stdout, err = run_cli(
        capsys,
        "train",
        "--training",
        tmp_path / "training.tsv",
        "--testing",
        tmp_path / "testing.tsv",
        "--model",
        "DistMult",
        "--epochs",
        "4",
        "--checkpoints",
        "2",
        "--embedding-dim",
        "8",
        "--output",
        run_dir,
    )
    assert code == 0, err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"] == "DistMult" and manifest["inverse_triples"] is False
    assert [c["epoch"] for c in manifest["checkpoints"]] == [1, 4]  # geometric: the first epoch and the last
    assert all(c["learning_rate"] == 0.01 for c in manifest["checkpoints"])
    assert all((run_dir / c["file"]).is_file() for c in manifest["checkpoints"])
    assert set(manifest["splits"]) == {"training", "testing"}
    run = load_run(run_dir)
    assert len(run.training_triples) == ds.training.num_triples
    assert (run_dir / "entities.tsv").is_file() and (run_dir / "triples" / "training.tsv").is_file()


def test_python_dash_m_and_demo(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kgtracin",
            "demo",
            "--model",
            "DistMult",
            "--epochs",
            "2",
            "--num-test",
            "2",
            "--top-k",
            "2",
            "--output",
            tmp_path / "demo",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("proponent") >= 4 and result.stdout.count("opponent") >= 4
    assert (tmp_path / "demo" / "manifest.json").is_file()


# -- bad input ----------------------------------------------------------------------------------------


@pytest.fixture()
def out(tmp_path):
    return tmp_path / "result.tsv"


def test_missing_run_dir(capsys, tmp_path, out):
    code, _, err = run_cli(capsys, "explain", tmp_path / "nope", "--split", "test", "--output", out)
    assert_clean_error(code, err, "nope", "does not exist")
    assert not out.exists()


def test_not_a_run_dir(capsys, tmp_path, out):
    code, _, err = run_cli(capsys, "explain", tmp_path, "--split", "test", "--output", out)
    assert_clean_error(code, err, "neither a kgtracin run")


def test_missing_test_file(nations_run, capsys, tmp_path, out):
    code, _, err = run_cli(capsys, "explain", nations_run, "--test-file", tmp_path / "x.tsv", "--output", out)
    assert_clean_error(code, err, "x.tsv", "does not exist")
    assert not out.exists()


@pytest.mark.parametrize(
    "content, words",
    [
        ("", ["holds no triples"]),
        ("brazil\tembassy\n", ["line 1", "3 tab-separated columns", "got 2"]),
        ("brazil\tembassy\tuk\textra\n", ["line 1", "got 4"]),
        ("brazil embassy uk\n", ["line 1", "got 1"]),
        ("brazil\tembassy\tatlantis\n", ["unknown entity label 'atlantis'"]),
        ("brazil\tlikes\tuk\n", ["unknown relation label 'likes'"]),
    ],
)
def test_bad_test_file(nations_run, capsys, tmp_path, out, content, words):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    code, _, err = run_cli(capsys, "explain", nations_run, "--test-file", bad, "--output", out)
    assert_clean_error(code, err, *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "triple, words",
    [
        (["brazil", "embassy", "atlantis"], ["unknown entity label 'atlantis'"]),
        (["brazil", "likes", "uk"], ["unknown relation label 'likes'"]),
        (["999", "0", "1"], ["entity id 999 is out of range"]),
        (["0", "77", "1"], ["relation id 77 is out of range"]),
    ],
)
def test_bad_triple(nations_run, capsys, out, triple, words):
    code, _, err = run_cli(capsys, "explain", nations_run, "--triple", *triple, "--output", out)
    assert_clean_error(code, err, *words)
    assert not out.exists()


def test_ids_are_accepted_for_triples(nations_run, capsys, out):
    code, _, err = run_cli(capsys, "explain", nations_run, "--triple", "0", "0", "1", "--top-k", "1", "--output", out)
    assert code == 0, err
    assert len(pd.read_csv(out, sep="\t")) == 2


@pytest.mark.parametrize("command", ["explain", "self-influence"])
def test_bad_top_k(nations_run, capsys, out, command):
    extra = ["--split", "test"] if command == "explain" else []
    code, _, err = run_cli(capsys, command, nations_run, *extra, "--top-k", "0", "--output", out)
    assert_clean_error(code, err, "--top-k", ">= 1")
    assert not out.exists()


def test_pattern_matching_nothing(nations_run, capsys, out):
    code, _, err = run_cli(
        capsys, "explain", nations_run, "--split", "test", "--parameters", "no.such.*", "--output", out
    )
    assert_clean_error(code, err, "no.such.*", "matches no trainable parameter")
    assert not out.exists()


@pytest.mark.parametrize("target", ["model.pt", "checkpoints"])
def test_corrupt_model_file(nations_run, capsys, tmp_path, out, target):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(nations_run, copy)
    victim = copy / target if target == "model.pt" else next((copy / "checkpoints").iterdir())
    victim.write_bytes(b"PK\x03\x04 definitely not a torch file")
    code, _, err = run_cli(capsys, "explain", copy, "--split", "test", "--limit", "1", "--output", out)
    assert_clean_error(code, err, victim.name, "corrupt")
    assert not out.exists()


@pytest.mark.parametrize(
    "name, words",
    [
        ("result.csv", [".tsv or .jsonl"]),
        (".", ["must end in .tsv or .jsonl"]),
    ],
)
def test_unwritable_output(nations_run, capsys, tmp_path, name, words):
    code, _, err = run_cli(capsys, "explain", nations_run, "--split", "test", "--output", tmp_path / name)
    assert_clean_error(code, err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_output_is_directory(nations_run, capsys, tmp_path):
    target = tmp_path / "dir.tsv"
    target.mkdir()
    code, _, err = run_cli(capsys, "explain", nations_run, "--split", "test", "--output", target)
    assert_clean_error(code, err, "is a directory")


def test_no_test_selection(nations_run, capsys, out):
    code, _, err = run_cli(capsys, "explain", nations_run, "--output", out)
    assert_clean_error(code, err, "exactly one of")


def test_bad_method_option(nations_run, capsys, out):
    code, _, err = run_cli(capsys, "explain", nations_run, "--split", "test", "--method", "magic", "--output", out)
    assert_clean_error(code, err, "magic")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", ["not a UTF-8 text file"]),
        (b"just one column\nsecond line\n", ["line 1", "3 tab-separated columns"]),
        (b"", ["holds no triples"]),
    ],
)
def test_train_file_not_triples(capsys, tmp_path, content, words):
    bad = tmp_path / "train.tsv"
    bad.write_bytes(content)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "train",
        "--training",
        bad,
        "--model",
        "DistMult",
        "--epochs",
        "1",
        "--checkpoints",
        "1",
        "--output",
        run_dir,
    )
    assert_clean_error(code, err, *words)
    assert not run_dir.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["train.tsv"]


def test_train_bad_options(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "nations", "--model", "NoSuchModel", "--output", run_dir)
    assert_clean_error(code, err, "unknown model 'NoSuchModel'")
    code, _, err = run_cli(
        capsys, "train", "--dataset", "nations", "--epochs", "2", "--checkpoints", "3", "--output", run_dir
    )
    assert_clean_error(code, err, "--checkpoints")
    code, _, err = run_cli(capsys, "train", "--training", tmp_path / "missing.tsv", "--output", run_dir)
    assert_clean_error(code, err, "missing.tsv", "does not exist")
    assert not run_dir.exists()


def test_train_refuses_existing_output(nations_run, capsys):
    code, _, err = run_cli(capsys, "train", "--dataset", "nations", "--output", nations_run)
    assert_clean_error(code, err, "already exists")
    assert (Path(nations_run) / "manifest.json").is_file()


# -- quality commands -----------------------------------------------------------------------------------


def test_explain_reports_the_models_view(nations_run, tmp_path, capsys):
    from kgtracin.predictions import KnownTriples, tail_view

    out = tmp_path / "view.tsv"
    code, stdout, err = run_cli(
        capsys, "explain", nations_run, "--split", "test", "--limit", "2", "--top-k", "2", "--output", out
    )
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    assert list(frame.columns[:6]) == [
        "test_index",
        "test_head",
        "test_relation",
        "test_tail",
        "test_score",
        "test_rank",
    ]
    run = load_run(nations_run)
    scores, ranks = tail_view(run.model, run.splits["testing"][:2], KnownTriples(run.splits.values()))
    first = frame.groupby("test_index").first()
    assert first["test_rank"].tolist() == ranks.tolist()
    assert torch.allclose(torch.tensor(first["test_score"].to_numpy()), scores.double(), atol=1e-6)
    assert "filtered rank" in stdout


def test_audit(nations_run, tmp_path, capsys):
    out = tmp_path / "audit.tsv"
    code, _stdout, err = run_cli(
        capsys, "audit", nations_run, "--top-k", "15", "--order-by", "memorization", "--output", out
    )
    assert code == 0, err
    assert "choosing the detector" not in err  # a named detector: no calibration
    frame = pd.read_csv(out, sep="\t")
    assert list(frame.columns) == [
        "rank",
        "head",
        "relation",
        "tail",
        "train_index",
        "memorization",
        "validation_cosine",
        "validation",
        "self_influence",
        "support",
        "consistency",
        "loss",
    ]
    assert len(frame) == 15 and frame["memorization"].is_monotonic_decreasing
    code, _, err = run_cli(capsys, "audit", nations_run, "--order-by", "loss", "--output", out)
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    assert len(frame) == len(load_run(nations_run).training_triples) and frame["loss"].is_monotonic_decreasing


@pytest.mark.parametrize(
    "args, words",
    [
        (["--noisy", "2"], ["--noisy"]),
        (["--no-deletion"], ["--noisy"]),
        (["--k", "0"], ["--k"]),
    ],
)
def test_evaluate_bad_options(nations_run, capsys, tmp_path, args, words):
    code, _, err = run_cli(capsys, "evaluate", nations_run, "--output", tmp_path / "ev", *args)
    assert_clean_error(code, err, *words)
    assert not (tmp_path / "ev").exists()


def test_train_checkpoints_default_to_epochs(tmp_path, capsys):
    code, stdout, err = run_cli(
        capsys,
        "train",
        "--dataset",
        "nations",
        "--model",
        "DistMult",
        "--epochs",
        "2",
        "--embedding-dim",
        "8",
        "--output",
        tmp_path / "run",
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [c["epoch"] for c in manifest["checkpoints"]] == [1, 2]
    assert "filtered test MRR" in stdout and manifest["evaluation"]["mrr"] > 0


@pytest.mark.parametrize("flag", ["--predict", "--predict-head"])
def test_explain_predictions(nations_run, tmp_path, capsys, flag):
    """The model's top new completions, best first, none of them a training triple, then explained."""
    run = load_run(nations_run)
    h, r, t = run.labels.to_labels(run.splits["testing"][:1])[0]
    anchor = (h, r) if flag == "--predict" else (r, t)
    out = tmp_path / "predicted.tsv"
    code, _stdout, err = run_cli(
        capsys, "explain", nations_run, flag, *anchor, "--n", "2", "--top-k", "1", "--output", out
    )
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t").groupby("test_index").first()
    assert len(frame) == 2
    ids = run.labels.to_ids(frame[["test_head", "test_relation", "test_tail"]].to_numpy())
    training = {tuple(x) for x in run.training_triples.tolist()}
    assert not any(tuple(x) in training for x in ids.tolist())
    with torch.no_grad():
        if flag == "--predict":
            scores = run.model.predict_t(ids[:1, :2])[0]
            slot = 2
        else:
            scores = run.model.predict_h(ids[:1, 1:])[0]
            slot = 0
    candidates = [
        e
        for e in range(run.model.num_entities)
        if tuple(ids[0].tolist()[:slot] + [e] + ids[0].tolist()[slot + 1 :]) not in training
    ]
    best = sorted(candidates, key=lambda e: -float(scores[e]))[:2]
    assert ids[:, slot].tolist() == best


def test_explain_predict_bad_label(nations_run, capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "explain", nations_run, "--predict", "atlantis", "embassy", "--output", tmp_path / "x.tsv"
    )
    assert_clean_error(code, err, "atlantis")
    assert not (tmp_path / "x.tsv").exists()


def test_run_dir_given_as_a_file(nations_run, capsys, out):
    code, _, err = run_cli(capsys, "explain", nations_run / "model.pt", "--split", "test", "--output", out)
    assert_clean_error(code, err, "is a file", "run directory")
    assert not out.exists()


def test_evaluate_output_folder_must_be_writable(nations_run, capsys, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = run_cli(capsys, "evaluate", nations_run, "--output", tmp_path / "a-file" / "ev")
    assert_clean_error(code, err, "not a writable folder")
    assert (tmp_path / "a-file").read_text() == "not a folder"
