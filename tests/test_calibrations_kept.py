"""Kept calibrations (:mod:`kgtracin.calibrations`): the audit's default order is chosen from the run once, then
read back."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat

import pandas as pd
import pytest
import torch

from kgtracin import calibrations
from kgtracin.calibrations import FORMAT, cache_folder, calibration_key, keep, key_for, read_kept
from kgtracin.evaluation import calibration
from kgtracin.evaluation.calibration import CalibrationConfig, calibrate
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli

DETECTORS = ("memorization", "self_influence", "support", "loss")
SETTINGS = dict(plant="plausible", fraction=0.05, seed=0, loss="bce", parameters="all")


def _edit_manifest(run_dir, change) -> None:
    """Change a copied run's manifest in place: ``change(manifest)``."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    change(manifest)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def _report_page(capsys, run_dir, out, audit: int) -> str:
    """``kgtracin report RUN --audit N`` on one test triple: the page written."""
    args = ["report", run_dir, "--split", "test", "--limit", "1", "--audit", str(audit), "--output", out]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    return out.read_text(encoding="utf-8")


@pytest.fixture
def counted(monkeypatch):
    """Stand in for the retraining: ``choose_detector`` returns a fixed choice and counts its calls."""
    calls = []

    def choose(run, detectors, config, before_training=None, **kwargs):
        calls.append((config, kwargs))
        if before_training is not None:
            before_training()
        return "support", {name: 0.5 + 0.1 * (name == "support") for name in detectors}

    monkeypatch.setattr(calibration, "choose_detector", choose)
    return calls


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KGTRACIN_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_folder() == tmp_path / "mine" / "calibrations"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KGTRACIN_CACHE_DIR", "~/mine")
    assert cache_folder() == tmp_path / "home" / "mine" / "calibrations"
    monkeypatch.delenv("KGTRACIN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "kgtracin" / "calibrations"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_folder() == tmp_path / "home" / ".cache" / "kgtracin" / "calibrations"


def test_the_key_names_everything_the_choice_depends_on(distmult_run_copy):
    run = load_run(distmult_run_copy)
    key = calibration_key(run, DETECTORS, **SETTINGS)
    assert key == calibration_key(load_run(distmult_run_copy), DETECTORS, **SETTINGS)  # the same run, read again
    assert key["pykeen"] and key["torch"] and key["kgtracin"] and key["parameters"] == "all"
    assert calibration_key(run, DETECTORS, **{**SETTINGS, "parameters": ("x.*",)})["parameters"] == ["x.*"]
    changed = [
        calibration_key(run, DETECTORS[:3], **SETTINGS),
        *(
            calibration_key(run, DETECTORS, **{**SETTINGS, name: value})
            for name, value in [
                ("plant", "triples"),
                ("fraction", 0.1),
                ("seed", 1),
                ("loss", "softmax"),
                ("parameters", ["x.*"]),
            ]
        ),
        calibration_key(run, DETECTORS, **SETTINGS, options={"precision": "bf16"}),
    ]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:  # on a CPU, the retraining rounds differently with more threads
        patch.setattr(torch.cuda, "is_available", lambda: False)
        on_cpu = calibration_key(run, DETECTORS, **SETTINGS)
        try:
            torch.set_num_threads(threads + 1)
            assert calibration_key(run, DETECTORS, **SETTINGS) != on_cpu
        finally:
            torch.set_num_threads(threads)
    assert key["machine"] == calibrations.machine() and key["machine"]["device"] in ("cpu", "cuda")
    assert all(other != key for other in changed)
    bf16, fp16 = ({"precision": value} for value in ("bf16", "fp16"))
    assert calibration_key(run, DETECTORS, **SETTINGS, options=bf16) != calibration_key(
        run, DETECTORS, **SETTINGS, options=fp16
    )
    relabelled = load_run(distmult_run_copy)
    relabelled.labels = type(run.labels)(run.labels.entities[::-1], run.labels.relations)
    assert calibration_key(relabelled, DETECTORS, **SETTINGS)["run"] != key["run"]
    # every split counts: the training triples are retrained on, all are kept out of the fakes, and the
    # validation triples are scored
    for split in ("validation", "testing"):
        other = load_run(distmult_run_copy)
        other.splits[split] = other.splits[split][1:]
        assert calibration_key(other, DETECTORS, **SETTINGS)["run"] != key["run"], split
    run.training_triples = run.training_triples[1:]
    assert calibration_key(run, DETECTORS, **SETTINGS)["run"] != key["run"]
    manifest = distmult_run_copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"seed": 1', '"seed": 2'))
    assert calibration_key(load_run(distmult_run_copy), DETECTORS, **SETTINGS)["run"] != key["run"]
    # the final model is not retrained from: a change to it leaves the key (and the choice) as it is
    manifest.write_text(manifest.read_text().replace('"seed": 2', '"seed": 1'))
    model = distmult_run_copy / "model.pt"
    model.write_bytes(model.read_bytes() + b"\0")
    assert calibration_key(load_run(distmult_run_copy), DETECTORS, **SETTINGS) == key
    run.path = None
    assert calibration_key(run, DETECTORS, **SETTINGS) is None


def test_the_machine_is_the_gpu_where_pykeen_finds_one_else_the_cpu_and_its_threads(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = calibrations.machine()
    assert cpu["device"] == "cpu" and cpu["cpu"][2] == torch.get_num_threads() and len(cpu["cpu"]) == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Some GPU")
    gpu = calibrations.machine()
    assert gpu == {"device": "cuda", "gpu": "Some GPU", "cuda": torch.version.cuda}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Another GPU")
    assert calibrations.machine() != gpu


def test_key_for_leaves_out_what_changes_no_score(distmult_run):
    run = load_run(distmult_run)
    plain = key_for(run, DETECTORS, CalibrationConfig())
    assert plain == key_for(run, DETECTORS, CalibrationConfig(progress=False), method="loop", batch_size=7)
    assert plain == key_for(run, DETECTORS, CalibrationConfig(), loss="bce", parameters=[])  # the audit's defaults
    assert plain != key_for(run, DETECTORS, CalibrationConfig(), precision="bf16")
    assert plain != key_for(run, DETECTORS, CalibrationConfig(), loss="softmax")
    assert key_for(run, DETECTORS, CalibrationConfig(), parameters=["x.*"])["parameters"] == ["x.*"]
    assert plain["loss"] == "bce" and plain["parameters"] == "all"
    assert plain != key_for(run, DETECTORS, CalibrationConfig(plant="triples"))


def test_kept_and_read_back(distmult_run, tmp_path):
    key = calibration_key(load_run(distmult_run), DETECTORS, **SETTINGS)
    assert read_kept(key, tmp_path) is None
    deep = tmp_path / "deep" / "new" / "calibrations"  # folders are made as needed
    assert read_kept(key, deep) is None and keep(key, "loss", dict.fromkeys(DETECTORS, 0.5), deep).parent == deep
    assert read_kept(key, deep)[0] == "loss"
    aucs = {"memorization": 0.7, "self_influence": float("nan"), "support": 0.9, "loss": 0.5}
    path = keep(key, "support", aucs, tmp_path)
    assert path.parent == tmp_path and {p.name for p in tmp_path.iterdir()} == {"deep", path.name}  # no tmp
    chosen, read, where = read_kept(key, tmp_path)
    assert (chosen, where) == ("support", path) and read["support"] == 0.9 and math.isnan(read["self_influence"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # the user's umask, as every output
    assert read_kept({**key, "seed": 1}, tmp_path) is None
    assert read_kept(None, tmp_path) is None and keep(None, "support", aucs, tmp_path) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda record: "not json",
        lambda record: json.dumps({**record, "format": "other/1"}),
        lambda record: json.dumps({**record, "key": {**record["key"], "loss": "softmax"}}),
        lambda record: json.dumps({**record, "chosen": "validation"}),
        lambda record: json.dumps({**record, "aucs": {"support": 0.9}}),
        lambda record: json.dumps({**record, "aucs": {**record["aucs"], "loss": None}}),
        lambda record: json.dumps({**record, "aucs": {**record["aucs"], "loss": "abc"}}),
        lambda record: json.dumps({**record, "aucs": {**record["aucs"], "loss": True}}),
        lambda record: json.dumps({**record, "aucs": {**record["aucs"], "support": float("nan")}}),
        lambda record: json.dumps(record) + " " * (1 << 16),
    ],
)
def test_a_damaged_or_foreign_file_counts_as_absent(distmult_run, tmp_path, damage):
    key = calibration_key(load_run(distmult_run), DETECTORS, **SETTINGS)
    path = keep(key, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path)
    path.write_text(damage(json.loads(path.read_text())))
    assert read_kept(key, tmp_path) is None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_damaged_kept_file_is_replaced_by_the_next_calibration(distmult_run, tmp_path, counted):
    run = load_run(distmult_run)
    first = calibrate(run, DETECTORS, CalibrationConfig(progress=False), tmp_path)
    record = json.loads(first.path.read_text())
    first.path.write_text(json.dumps({**record, "aucs": {**record["aucs"], "loss": None}}))
    again = calibrate(run, DETECTORS, CalibrationConfig(progress=False), tmp_path)
    assert not again.reused and again.path == first.path and len(counted) == 2
    assert calibrate(run, DETECTORS, CalibrationConfig(progress=False), tmp_path).reused


def test_what_is_not_a_regular_file_is_never_opened_nor_replaced(distmult_run, tmp_path, caplog):
    key = calibration_key(load_run(distmult_run), DETECTORS, **SETTINGS)
    path = keep(key, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path)
    path.unlink()
    os.mkfifo(path)  # opening it to read would wait for a writer for ever
    with caplog.at_level(logging.WARNING):
        assert (
            read_kept(key, tmp_path) is None and keep(key, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path) is None
        )
    assert stat.S_ISFIFO(os.lstat(path).st_mode) and f"{path} exists and is not a file kgtracin wrote" in caplog.text
    path.unlink()
    elsewhere = keep({**key, "seed": 9}, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path)
    path.symlink_to(elsewhere)  # the user's link, to a file of kgtracin's format: read through, never replaced
    assert read_kept(key, tmp_path) is None
    assert keep(key, "loss", dict.fromkeys(DETECTORS, 0.5), tmp_path) is None
    assert path.is_symlink() and json.loads(elsewhere.read_text())["chosen"] == "support"


def test_a_folder_that_cannot_be_searched_costs_only_the_keeping(distmult_run, tmp_path, caplog, monkeypatch):
    """Python raises PermissionError from ``is_symlink`` in a folder without search permission (as root cannot
    be made to see, it is stood in for)."""
    key = calibration_key(load_run(distmult_run), DETECTORS, **SETTINGS)
    path = keep(key, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path)

    def refused(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "is_symlink", refused)
    with caplog.at_level(logging.WARNING):
        assert keep(key, "loss", dict.fromkeys(DETECTORS, 0.5), tmp_path) is None
    assert "calibration not kept" in caplog.text and "Permission denied" in caplog.text


def test_a_cache_folder_inside_the_run_keeps_nothing(distmult_run_copy, caplog, counted):
    before = sorted(p.relative_to(distmult_run_copy) for p in distmult_run_copy.rglob("*"))
    inside_run = distmult_run_copy / "checkpoints" / "cache"
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            result = calibrate(load_run(distmult_run_copy), DETECTORS, CalibrationConfig(), inside_run)
            assert result.path is None and not result.reused
    assert len(counted) == 2 and "inside the run's folder" in caplog.text
    assert sorted(p.relative_to(distmult_run_copy) for p in distmult_run_copy.rglob("*")) == before


def test_a_file_kgtracin_did_not_write_is_never_replaced(distmult_run, tmp_path, caplog):
    key = calibration_key(load_run(distmult_run), DETECTORS, **SETTINGS)
    path = keep(key, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path)
    path.write_text("the user's own notes")
    with caplog.at_level(logging.WARNING):
        assert keep(key, "loss", dict.fromkeys(DETECTORS, 0.5), tmp_path) is None
    assert path.read_text() == "the user's own notes" and "not a file kgtracin wrote" in caplog.text
    record = json.loads(keep({**key, "seed": 5}, "loss", dict.fromkeys(DETECTORS, 0.5), tmp_path).read_text())
    assert record["format"] == FORMAT  # a kgtracin file of its own name is written, and replaced when asked again
    assert keep({**key, "seed": 5}, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path) is not None


def test_a_folder_that_is_a_file_costs_only_the_keeping(distmult_run, tmp_path, caplog):
    key = calibration_key(load_run(distmult_run), DETECTORS, **SETTINGS)
    (tmp_path / "kept").write_text("a file")
    with caplog.at_level(logging.WARNING):
        assert keep(key, "support", dict.fromkeys(DETECTORS, 0.5), tmp_path / "kept") is None
    assert f"calibration not kept in {tmp_path / 'kept'}" in caplog.text and (tmp_path / "kept").read_text() == "a file"


def test_calibrate_retrains_once_per_run_and_settings(distmult_run, tmp_path, counted):
    run = load_run(distmult_run)
    first = calibrate(run, DETECTORS, CalibrationConfig(progress=False), tmp_path, loss="bce")
    assert (first.chosen, first.reused, len(counted)) == ("support", False, 1) and first.path.parent == tmp_path
    again = calibrate(load_run(distmult_run), DETECTORS, CalibrationConfig(), tmp_path, method="loop")
    assert (again.chosen, again.aucs, again.reused, again.path, len(counted)) == (
        "support",
        first.aucs,
        True,
        first.path,
        1,
    )
    other = calibrate(run, DETECTORS, CalibrationConfig(plant="triples"), tmp_path)
    assert not other.reused and len(counted) == 2 and counted[-1][0].plant == "triples"
    run.path = None  # nothing to identify the run by: computed every time, kept nowhere
    for _ in range(2):
        assert calibrate(run, DETECTORS, CalibrationConfig(), tmp_path).path is None
    assert len(counted) == 4


def test_the_audit_orders_by_the_runs_calibration_by_default(distmult_run, tmp_path, capsys, monkeypatch):
    """A run made by kgtracin train is audited in the order chosen from it (plausible fakes planted); a second
    audit reads the choice back without retraining, and says so."""
    chosen, calls = {}, []
    original = calibration.choose_detector

    def spy(run, detectors, config, **kwargs):
        calls.append(config)
        chosen["result"] = original(run, detectors, config, **kwargs)
        return chosen["result"]

    monkeypatch.setattr(calibration, "choose_detector", spy)
    out = tmp_path / "audit.tsv"
    code, stdout, err = run_cli(capsys, "audit", distmult_run, "--output", out)
    assert code == 0, err
    best, aucs = chosen["result"]
    assert [c.plant for c in calls] == ["plausible"] and "choosing the detector: retraining" in err
    seconds = sum(json.loads((distmult_run / "manifest.json").read_text())["epoch_seconds"])
    assert f"about as long as the run's own training ({seconds:.0f} s)" in err
    assert "calibration retraining): " in stdout and f"most suspicious first by {best}" in stdout
    assert all(f"{name} {auc:.3f}" in stdout for name, auc in aucs.items())
    assert pd.read_csv(out, sep="\t")[best].is_monotonic_decreasing
    kept = list(calibrations.cache_folder().iterdir())
    assert len(kept) == 1 and json.loads(kept[0].read_text())["chosen"] == best
    code, stdout, err = run_cli(capsys, "audit", distmult_run, "--output", out)
    assert code == 0, err
    assert len(calls) == 1 and "choosing the detector" not in err
    assert f"read back from {kept[0]}" in stdout and f"most suspicious first by {best}" in stdout
    # --plant alone means auto, with that plant
    code, stdout, err = run_cli(capsys, "audit", distmult_run, "--plant", "triples", "--output", out)
    assert code == 0, err
    assert [c.plant for c in calls] == ["plausible", "triples"]


def test_no_cache_calibrates_every_time_and_keeps_nothing(distmult_run, tmp_path, capsys, counted):
    code, stdout, err = run_cli(capsys, "audit", distmult_run, "--output", tmp_path / "a.tsv")
    assert code == 0, err
    kept = {path: path.read_bytes() for path in calibrations.cache_folder().iterdir()}
    assert len(kept) == 1 and len(counted) == 1
    for attempt in range(2):
        code, stdout, err = run_cli(capsys, "audit", distmult_run, "--no-cache", "--output", tmp_path / "b.tsv")
        assert code == 0, err
        assert len(counted) == 2 + attempt and "read back" not in stdout and "calibration retraining" in stdout
        assert "(not kept: --no-cache;" in err
        assert {path: path.read_bytes() for path in calibrations.cache_folder().iterdir()} == kept
        for path in kept:  # then with nothing kept: nothing is kept either
            path.unlink()
        kept = {}
    run = load_run(distmult_run)
    assert calibrate(run, DETECTORS, CalibrationConfig(keep=False), tmp_path).path is None
    assert len(counted) == 4 and not list(tmp_path.glob("*.json"))


def test_a_run_without_a_recipe_is_ordered_by_memorization(distmult_run_copy, tmp_path, capsys, counted):
    _edit_manifest(distmult_run_copy, lambda manifest: manifest.pop("training"))
    out = tmp_path / "audit.tsv"
    code, stdout, err = run_cli(capsys, "audit", distmult_run_copy, "--output", out)
    assert code == 0, err
    note = (
        "ordering by memorization: choosing the detector from the run (--order-by auto) retrains its recipe, which "
        "only a run made by kgtracin train records"
    )
    assert not counted and err.strip().splitlines()[0] == note and err.count("ordering by") == 1  # then progress
    assert "most suspicious first by memorization" in stdout
    assert pd.read_csv(out, sep="\t")["memorization"].is_monotonic_decreasing
    out.unlink()
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--plant", "triples", "--output", out)
    assert_clean_error(code, err, "--plant", "kgtracin train")
    assert not out.exists() and not counted


def test_the_report_follows_a_kept_choice_and_never_retrains(distmult_run, tmp_path, capsys, counted):
    """``kgtracin report --audit N`` orders by memorization, and says how to choose, until ``kgtracin audit`` has
    kept a choice for the run; then it orders by that choice."""
    from kgtracin.config import DETECTORS as ALL

    out = tmp_path / "report.html"
    page = _report_page(capsys, distmult_run, out, 5)
    assert "Ordered by memorization. kgtracin audit, with its default settings, chooses the detector" in page
    key = key_for(load_run(distmult_run), ALL)
    keep(key, "support", {name: 0.5 + 0.25 * (name == "support") for name in ALL})
    page = _report_page(capsys, distmult_run, out, 5)
    assert "Ordered by support, the detector kgtracin audit chose for this run" in page and "0.750" in page
    section = page[page.index('<section class="audit">') :]
    head = re.findall(r"<th[^>]*>([^<]*)</th>", section)
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", section)[1:]]
    support = [float(row[head.index("support")]) for row in rows]
    assert len(rows) == 5 and support == sorted(support, reverse=True) and not counted


def test_a_recipe_kgtracin_cannot_read_is_said_not_passed_over(distmult_run_copy, tmp_path, capsys, monkeypatch):
    import kgtracin.training

    trained = []
    monkeypatch.setattr(kgtracin.training, "fit", lambda *args, **kwargs: trained.append(args))
    _edit_manifest(distmult_run_copy, lambda manifest: manifest["training"].update(future_field=1))
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--output", out)
    assert_clean_error(code, err, "training recipe kgtracin cannot read", "future_field")
    assert not out.exists() and not trained


def test_the_report_of_a_run_without_a_recipe_says_why_memorization(distmult_run_copy, tmp_path, capsys):
    _edit_manifest(distmult_run_copy, lambda manifest: manifest.pop("training"))
    page = _report_page(capsys, distmult_run_copy, tmp_path / "report.html", 3)
    assert "Ordered by memorization, the audit&#x27;s order for a run without a training recipe" in page


@pytest.mark.parametrize(
    "times, said",
    [
        ([30.0, 40.0], " (70 s)"),
        ([600, 300], " (15 min)"),
        ([], ""),
        (None, ""),
        (["30"], ""),
    ],
)
def test_the_retraining_is_announced_with_the_runs_training_time(times, said):
    from types import SimpleNamespace

    from kgtracin.cli.audit import _training_time

    text = _training_time(SimpleNamespace(manifest={} if times is None else {"epoch_seconds": times}))
    assert text == (f", about as long as the run's own training{said}" if said else "")
