"""Kept retrainings: a cross-fitting's models read back instead of retrained, resumed where it stopped, and never
a file of the user's replaced."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pandas as pd
import pytest
import torch

from kgtracin import retrainings
from kgtracin.errors import KGTracinError
from kgtracin.evaluation import end_to_end
from kgtracin.evaluation.held_out import HeldOutConfig, cross_fit, folds_of, kept_folds
from kgtracin.runs import load_run

from .test_cli import run_cli


class _Interrupted(Exception):
    pass


_REAL_RETRAINING = end_to_end._Retrainer.__call__


def _count_retrainings(monkeypatch, calls: list, stop_at: int | None = None) -> None:
    """Count the real retrainings; with ``stop_at``, interrupt the one of that number (from 0)."""
    real = _REAL_RETRAINING

    def counted(self, deleted, epochs=None):
        if stop_at is not None and len(calls) == stop_at:
            raise _Interrupted
        calls.append(list(deleted))
        return real(self, deleted, epochs)

    monkeypatch.setattr(end_to_end._Retrainer, "__call__", counted)


def _probes(run) -> tuple[torch.Tensor, torch.Tensor]:
    probes = run.training_triples[:12].clone()
    probes[:, 2] = probes[:, 2].roll(1)
    return probes, torch.arange(12) % 3


def test_a_second_cross_fitting_reads_every_retraining_back_bit_for_bit(distmult_run, monkeypatch):
    run = load_run(distmult_run)
    config = HeldOutConfig(folds=3, progress=False)
    probes, probe_folds = _probes(run)
    calls = []
    _count_retrainings(monkeypatch, calls)
    assert kept_folds(run, config) == 0
    first = cross_fit(run, config, probes, probe_folds)
    assert len(calls) == 3 and kept_folds(run, config) == 3
    files = sorted(retrainings.cache_folder().glob("*.pt"))
    assert len(files) == 3
    written = [os.stat(file).st_ino for file in files]
    second = cross_fit(run, config, probes, probe_folds)
    assert len(calls) == 3  # nothing retrained
    assert [os.stat(file).st_ino for file in files] == written  # nor written again
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # another split of the folds is another set of retrainings
    assert kept_folds(run, HeldOutConfig(folds=3, seed=1, progress=False)) == 0
    assert kept_folds(run, HeldOutConfig(folds=2, progress=False)) == 0
    assert kept_folds(run, HeldOutConfig(folds=3, progress=False, keep=False)) == 0


def test_an_interrupted_cross_fitting_resumes_at_its_fold_and_equals_an_uninterrupted_one(
    distmult_run, monkeypatch, tmp_path
):
    run = load_run(distmult_run)
    config = HeldOutConfig(folds=3, progress=False)
    probes, probe_folds = _probes(run)
    calls = []
    _count_retrainings(monkeypatch, calls, stop_at=2)
    with pytest.raises(_Interrupted):
        cross_fit(run, config, probes, probe_folds)
    assert kept_folds(run, config) == 2
    _count_retrainings(monkeypatch, calls)
    resumed = cross_fit(run, config, probes, probe_folds)
    third = (folds_of(run.training_triples, 3, 0) == 2).nonzero().flatten().tolist()
    assert len(calls) == 3 and calls[2] == third  # only the third fold was retrained on resuming
    monkeypatch.setenv("KGTRACIN_CACHE_DIR", str(tmp_path / "fresh"))
    whole = cross_fit(run, HeldOutConfig(folds=3, progress=False, keep=False), probes, probe_folds)
    assert len(calls) == 6 and not (tmp_path / "fresh").exists()
    assert torch.equal(resumed[0], whole[0]) and torch.equal(resumed[1], whole[1])


def test_a_kept_file_that_does_not_fit_is_retrained_over_and_a_foreign_file_is_never_replaced(
    distmult_run, monkeypatch, caplog
):
    run = load_run(distmult_run)
    config = HeldOutConfig(folds=2, progress=False)
    calls = []
    _count_retrainings(monkeypatch, calls)
    key0, key1 = (retrainings.retraining_key(run, 2, 0, fold) for fold in (0, 1))
    path0, path1 = retrainings._path(key0, None), retrainings._path(key1, None)
    path0.parent.mkdir(parents=True)
    # fold 0: kgtracin's own format, but weights of another shape: read, refused by the model, retrained, replaced
    state = {name: torch.zeros(1) for name in run.model.state_dict()}
    assert retrainings.keep_state(key0, state) == path0
    assert retrainings.read_state(key0) is not None
    # fold 1: a file of the user's at the name: never read as weights, never replaced
    path1.write_bytes(b"my notes")
    with caplog.at_level("WARNING"):
        cross_fit(run, config)
    assert len(calls) == 2
    assert path1.read_bytes() == b"my notes"
    assert "is not a file kgtracin wrote" in caplog.text
    kept = retrainings.read_state(key0)
    assert {name: value.shape for name, value in kept.items()} == {
        name: value.shape for name, value in run.model.state_dict().items()
    }
    assert retrainings.read_state(key1) is None
    # a kept file read under another key counts as absent
    os.replace(path0, path1)
    assert retrainings.read_state(key1) is None and retrainings.read_state(key0) is None


@pytest.mark.parametrize("change", ["dtype", "name"])
def test_weights_of_the_right_shapes_but_another_dtype_or_names_are_retrained_over(distmult_run, monkeypatch, change):
    run = load_run(distmult_run)
    config = HeldOutConfig(folds=2, progress=False)
    calls = []
    _count_retrainings(monkeypatch, calls)
    expected = cross_fit(run, HeldOutConfig(folds=2, progress=False, keep=False))
    for fold in (0, 1):
        key = retrainings.retraining_key(run, 2, 0, fold)
        state = {name: torch.zeros_like(value) for name, value in run.model.state_dict().items()}
        if change == "dtype":
            state = {name: value.double() for name, value in state.items()}
        else:
            state["extra"] = torch.zeros(1)
        retrainings.keep_state(key, state)
    assert kept_folds(run, config) == 0  # kgtracin's own files, for this key, but not for this model
    got = cross_fit(run, config)
    assert len(calls) == 4  # both refused by the model and retrained
    assert torch.equal(got[0], expected[0])


def test_a_link_or_a_folder_at_the_name_is_left_alone(distmult_run, tmp_path):
    run = load_run(distmult_run)
    key = retrainings.retraining_key(run, 2, 0, 0)
    path = retrainings._path(key, None)
    path.parent.mkdir(parents=True)
    target = tmp_path / "target.pt"
    retrainings.keep_state(key, {"w": torch.ones(2)}, tmp_path)  # a real kept file, elsewhere
    os.replace(retrainings._path(key, tmp_path), target)
    path.symlink_to(target)
    assert retrainings.keep_state(key, {"w": torch.zeros(2)}) is None
    assert path.is_symlink() and torch.equal(torch.load(target, weights_only=True)["state"]["w"], torch.ones(2))
    path.unlink()
    path.mkdir()
    assert retrainings.read_state(key) is None and retrainings.keep_state(key, {"w": torch.zeros(2)}) is None
    assert path.is_dir()


def test_nothing_is_kept_inside_the_run_folder_or_for_a_run_without_one(
    distmult_run_copy, monkeypatch, caplog, tmp_path
):
    monkeypatch.setenv("KGTRACIN_CACHE_DIR", str(distmult_run_copy / "cache"))
    before = sorted(p.relative_to(distmult_run_copy) for p in distmult_run_copy.rglob("*"))
    run = load_run(distmult_run_copy)
    calls = []
    _count_retrainings(monkeypatch, calls)
    with caplog.at_level("WARNING"):
        cross_fit(run, HeldOutConfig(folds=2, progress=False))
    assert "inside the run's folder" in caplog.text and len(calls) == 2
    assert sorted(p.relative_to(distmult_run_copy) for p in distmult_run_copy.rglob("*")) == before
    monkeypatch.delenv("KGTRACIN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    without_folder = dataclasses.replace(run, path=None)
    assert retrainings.retraining_key(without_folder, 2, 0, 0) is None
    cross_fit(without_folder, HeldOutConfig(folds=2, progress=False))
    assert len(calls) == 4 and not (tmp_path / "xdg").exists()


def test_the_second_audit_says_it_reads_the_retrainings_back_and_writes_the_same_columns(
    distmult_run, tmp_path, capsys, monkeypatch
):
    calls = []
    _count_retrainings(monkeypatch, calls)
    tables = []
    for attempt in range(2):
        out = tmp_path / f"audit{attempt}.tsv"
        code, _stdout, err = run_cli(
            capsys, "audit", distmult_run, "--order-by", "held_out", "--folds", "2", "--output", out
        )
        assert code == 0, err
        tables.append(pd.read_csv(out, sep="\t"))
        if attempt == 0:
            assert "retraining the run's recipe 2 times" in err
        else:
            assert f"the run's 2 retrainings read back from {retrainings.cache_folder()}" in err
    assert len(calls) == 2
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)


def test_no_cache_retrains_every_fold_and_keeps_nothing(distmult_run, tmp_path, capsys, monkeypatch):
    run = load_run(distmult_run)
    cross_fit(run, HeldOutConfig(folds=2, progress=False))
    kept = {path: path.read_bytes() for path in retrainings.cache_folder().iterdir()}
    assert len(kept) == 2
    calls = []
    _count_retrainings(monkeypatch, calls)
    args = ["audit", distmult_run, "--order-by", "held_out", "--folds", "2", "--no-cache"]
    code, _stdout, err = run_cli(capsys, *args, "--output", tmp_path / "a.tsv")
    assert code == 0, err
    assert len(calls) == 2 and "retraining the run's recipe 2 times" in err and "read back" not in err
    assert {path: path.read_bytes() for path in retrainings.cache_folder().iterdir()} == kept
    for path in kept:
        path.unlink()
    code, _stdout, err = run_cli(capsys, *args, "--output", tmp_path / "b.tsv")
    assert code == 0, err
    assert len(calls) == 4 and not list(retrainings.cache_folder().iterdir())


def test_a_retraining_that_diverges_is_refused_and_not_kept(distmult_run, monkeypatch):
    run = load_run(distmult_run)

    def diverged(self, deleted, epochs=None):
        model = _REAL_RETRAINING(self, deleted, epochs=1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float("nan"))
        return model

    monkeypatch.setattr(end_to_end._Retrainer, "__call__", diverged)
    config = HeldOutConfig(folds=2, progress=False)
    with pytest.raises(KGTracinError, match="non-finite scores"):
        cross_fit(run, config)
    assert kept_folds(run, config) == 0 and not list(retrainings.cache_folder().glob("*.pt"))


class _Payload:
    """Unpickled, it would make the folder ``ran``."""

    def __init__(self, ran):
        self.ran = str(ran)

    def __reduce__(self):
        return (os.mkdir, (self.ran,))


def test_a_fifo_a_damaged_file_or_a_pickle_with_code_counts_as_absent_and_runs_nothing(distmult_run, tmp_path):
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a FIFO at the kept file's name was opened"))
    signal.alarm(60)
    run = load_run(distmult_run)
    key = retrainings.retraining_key(run, 2, 0, 0)
    path = retrainings._path(key, None)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # opening it would wait for a writer forever
    assert retrainings.read_state(key) is None and retrainings.keep_state(key, {"w": torch.ones(2)}) is None
    path.unlink()
    kept = {"w": torch.arange(6.0), "b": torch.tensor(2.0)}
    assert retrainings.keep_state(key, kept) == path
    assert all(torch.equal(retrainings.read_state(key)[name], value) for name, value in kept.items())
    whole = path.read_bytes()
    at = whole.index(torch.arange(6.0).numpy().tobytes())
    path.write_bytes(whole[:at] + bytes([whole[at] ^ 1]) + whole[at + 1 :])  # one bit of the weights flipped
    assert retrainings.read_state(key) is None
    path.write_bytes(whole[: len(whole) // 2])  # truncated
    assert retrainings.read_state(key) is None
    assert retrainings.keep_state(key, kept) is None and path.read_bytes() == whole[: len(whole) // 2]
    path.unlink()
    torch.save({"format": retrainings.FORMAT, "key": key, "state": _Payload(tmp_path / "ran")}, path)
    assert retrainings.read_state(key) is None and not (tmp_path / "ran").exists()
    signal.alarm(0)


def test_the_audit_says_how_many_retrainings_it_reads_back(distmult_run, tmp_path, capsys):
    run = load_run(distmult_run)
    cross_fit(run, HeldOutConfig(folds=3, progress=False))
    retrainings._path(retrainings.retraining_key(run, 3, 0, 2), None).unlink()
    code, _stdout, err = run_cli(
        capsys, "audit", distmult_run, "--order-by", "held_out", "--folds", "3", "--output", tmp_path / "a.tsv"
    )
    assert code == 0, err
    folder = retrainings.cache_folder()
    assert f"2 of the run's 3 retrainings read back from {folder}; retraining the other one, without 1/3" in err
    retrainings._path(retrainings.retraining_key(run, 3, 0, 0), None).unlink()
    retrainings._path(retrainings.retraining_key(run, 3, 0, 1), None).unlink()
    code, _stdout, err = run_cli(
        capsys, "audit", distmult_run, "--order-by", "held_out", "--folds", "3", "--output", tmp_path / "b.tsv"
    )
    assert "1 of the run's 3 retrainings read back" in err and "retraining the other 2, each without 1/3" in err


def test_the_key_names_what_changes_a_retraining(distmult_run, distmult_run_copy, monkeypatch):
    run = load_run(distmult_run)
    key = retrainings.retraining_key(run, 3, 0, 0)
    others = [
        retrainings.retraining_key(run, 3, 0, 1),
        retrainings.retraining_key(run, 3, 1, 0),
        retrainings.retraining_key(run, 4, 0, 0),
    ]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:  # on a CPU (a GPU is keyed by its name), threads change the rounding
        patch.setattr(torch.cuda, "is_available", lambda: False)
        on_cpu = retrainings.retraining_key(run, 3, 0, 0)
        try:
            torch.set_num_threads(threads + 1)
            assert retrainings.retraining_key(run, 3, 0, 0) != on_cpu
        finally:
            torch.set_num_threads(threads)
    code = retrainings._TRAINING_CODE
    monkeypatch.setattr(retrainings, "_TRAINING_CODE", ("training.py",))
    others.append(retrainings.retraining_key(run, 3, 0, 0))
    monkeypatch.setattr(retrainings, "_TRAINING_CODE", code)
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    manifest["training"]["seed"] += 1  # the recipe's seed
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    others.append(retrainings.retraining_key(load_run(distmult_run_copy), 3, 0, 0))
    assert retrainings.retraining_key(run, 3, 0, 0) == key
    assert all(other != key for other in others) and len({retrainings._path(k, None) for k in [key, *others]}) == 6
