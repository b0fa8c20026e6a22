"""PyKEEN-native training: ``pipeline()`` with :class:`CheckpointCallback`, PyKEEN's own checkpoint files, and
pipeline folders explained from the CLI."""

from __future__ import annotations

import logging

import pytest
import torch

from kgtracin import Checkpoint, CheckpointCallback, KGTracinError, TracIn
from kgtracin.checkpoints import read_checkpoint_folder
from kgtracin.cli import main
from kgtracin.runs import load_run

from .conftest import relative_error

LR, GAMMA, EPOCHS, EVERY = 0.05, 0.5, 5, 2


def _pipeline(**training_kwargs):
    from pykeen.pipeline import pipeline

    logging.getLogger("pykeen").setLevel(logging.ERROR)
    return pipeline(
        dataset="nations",
        model="DistMult",
        model_kwargs=dict(embedding_dim=8),
        random_seed=1,
        optimizer="Adam",
        optimizer_kwargs=dict(lr=LR),
        training_kwargs=dict(num_epochs=EPOCHS, batch_size=512, use_tqdm=False, **training_kwargs),
        evaluation_kwargs=dict(use_tqdm=False, batch_size=256),
    )


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The README's example: a pipeline with a CheckpointCallback and a step learning-rate schedule."""
    folder = tmp_path_factory.mktemp("pipeline") / "run"
    callback = CheckpointCallback(folder / "checkpoints", every=EVERY)
    result = _pipeline(callbacks=callback)
    result.save_to_directory(folder)
    return folder, result, callback


def test_callback_saves_every_and_last_with_scheduled_rate(tmp_path):
    from pykeen.datasets import Nations
    from pykeen.pipeline import pipeline

    dataset = Nations()
    callback = CheckpointCallback(tmp_path / "ckpt", every=EVERY, triples_factory=dataset.training)
    pipeline(
        dataset=dataset,
        model="DistMult",
        model_kwargs=dict(embedding_dim=8),
        random_seed=1,
        optimizer_kwargs=dict(lr=LR),
        lr_scheduler="StepLR",
        lr_scheduler_kwargs=dict(step_size=1, gamma=GAMMA),
        training_kwargs=dict(num_epochs=EPOCHS, batch_size=512, use_tqdm=False, callbacks=callback),
        evaluation_kwargs=dict(use_tqdm=False, batch_size=256),
    )
    assert [p.name for p in callback.saved] == ["epoch_00002.pt", "epoch_00004.pt", "epoch_00005.pt"]
    for path, epoch in zip(callback.saved, (2, 4, 5)):
        content = torch.load(path, weights_only=True)  # readable without trusting pickles
        assert content["epoch"] == epoch
        # the rate the scheduler set for that epoch: LR * GAMMA ** (epoch - 1)
        assert content["learning_rate"] == pytest.approx(LR * GAMMA ** (epoch - 1))
        assert content["entity_to_id"] == dataset.training.entity_to_id
        assert content["relation_to_id"] == dataset.training.relation_to_id
    checkpoints = read_checkpoint_folder(tmp_path / "ckpt")
    assert [c.learning_rate for c in checkpoints] == pytest.approx([LR * GAMMA ** (e - 1) for e in (2, 4, 5)])
    assert not list((tmp_path / "ckpt").glob(".*"))  # no partial files left


def test_callback_rejects_bad_every(tmp_path):
    with pytest.raises(KGTracinError, match="every"):
        CheckpointCallback(tmp_path, every=0)


def test_pipeline_folder_is_a_run_with_all_checkpoints(pipeline_run):
    folder, result, callback = pipeline_run
    run = load_run(folder, trust_pickle=True, dataset="nations")
    assert [c.learning_rate for c in run.checkpoints] == [LR] * 3
    last = run.checkpoints[-1].load_state()
    for name, value in result.model.state_dict().items():  # the last checkpoint is the final model
        assert torch.equal(last[name], value.cpu())
    assert set(run.splits) == {"training", "validation", "testing"}
    # from_run reads every checkpoint: the same as building TracIn from the files by hand
    test = run.splits["testing"][:3]
    tracin = TracIn.from_run(folder, trust_pickle=True, progress=False)
    by_hand = TracIn(
        result.model,
        result.training,
        [Checkpoint(str(p), LR) for p in callback.saved],
        progress=False,
        loss=tracin.config.loss,
    )
    assert len(tracin.checkpoints) == 3
    assert relative_error(tracin.scores(test), by_hand.scores(test)) < 1e-6
    single = TracIn(
        result.model,
        result.training,
        [Checkpoint(str(callback.saved[-1]), LR)],
        progress=False,
        loss=tracin.config.loss,
    )
    assert relative_error(tracin.scores(test), single.scores(test)) > 1e-3  # the earlier checkpoints count


def test_pipeline_folder_from_the_cli(pipeline_run, tmp_path, capsys):
    folder, *_ = pipeline_run
    out = tmp_path / "influence.tsv"
    main(
        [
            "explain",
            str(folder),
            "--trust-pickle",
            "--dataset",
            "nations",
            "--split",
            "test",
            "--limit",
            "2",
            "--top-k",
            "3",
            "--output",
            str(out),
        ]
    )
    assert out.is_file() and len(out.read_text().splitlines()) == 1 + 2 * 2 * 3
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", str(folder), "--trust-pickle", "--split", "test", "--output", str(tmp_path / "x.tsv")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--dataset" in err and "\n" not in err
    assert not (tmp_path / "x.tsv").exists()


def test_pykeen_callback_files_need_a_learning_rate(pipeline_run, tmp_path, capsys):
    folder, result, _ = pipeline_run
    root = tmp_path / "pykeen-checkpoints"
    _pipeline(
        callbacks="checkpoint", callbacks_kwargs=dict(root=root, schedule="every", schedule_kwargs=dict(frequency=2))
    )
    files = sorted(root.glob("*.pt"))
    assert len(files) >= 2 and "state_dict" in torch.load(files[0], weights_only=True)
    with pytest.raises(KGTracinError, match="learning rate"):
        read_checkpoint_folder(root)
    checkpoints = read_checkpoint_folder(root, learning_rate=0.01)
    assert [c.learning_rate for c in checkpoints] == [0.01] * len(files)
    assert Checkpoint(str(files[0]), 0.01).load_state().keys() == result.model.state_dict().keys()
    out = tmp_path / "influence.tsv"
    main(
        [
            "explain",
            str(folder),
            "--trust-pickle",
            "--dataset",
            "nations",
            "--checkpoint-dir",
            str(root),
            "--learning-rate",
            "0.01",
            "--split",
            "test",
            "--limit",
            "1",
            "--output",
            str(out),
        ]
    )
    assert out.is_file()
    with pytest.raises(SystemExit):
        main(
            [
                "explain",
                str(folder),
                "--trust-pickle",
                "--dataset",
                "nations",
                "--checkpoint-dir",
                str(root),
                "--split",
                "test",
                "--output",
                str(tmp_path / "y.tsv"),
            ]
        )
    assert "--learning-rate" in capsys.readouterr().err


def test_training_loop_checkpoint_records_its_learning_rate(tmp_path):
    _pipeline(checkpoint_name="state.pt", checkpoint_directory=tmp_path, checkpoint_frequency=0)
    path = tmp_path / "state.pt"
    with pytest.raises(KGTracinError, match="--trust-pickle"):  # PyKEEN pickles NumPy random states in it
        Checkpoint(str(path))
    checkpoint = Checkpoint(str(path), trust_pickle=True)
    assert checkpoint.learning_rate == pytest.approx(LR)  # read from the optimizer state
    assert Checkpoint(str(path), 0.5, trust_pickle=True).learning_rate == 0.5  # a given rate wins
    with pytest.raises(KGTracinError, match="learning rate"):
        Checkpoint({"weight": torch.zeros(1)})


def _readme_blocks(heading: str) -> tuple[str, str]:
    from pathlib import Path

    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    bash = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return python, bash


def test_readme_pipeline_example(tmp_path, monkeypatch, capsys):
    """The README's pipeline example runs as written, and so does its command line."""
    import shlex

    python, bash = _readme_blocks("Explaining a PyKEEN pipeline")
    monkeypatch.chdir(tmp_path)
    exec(compile(python, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "proponent" in printed and "opponent" in printed
    assert len(list((tmp_path / "run" / "checkpoints").glob("epoch_*.pt"))) == 4
    assert len(TracIn.from_run("run", trust_pickle=True).checkpoints) == 4
    command = shlex.split(bash.strip())
    assert command[0] == "kgtracin"
    main(command[1:])
    assert (tmp_path / "influence.tsv").is_file()


def _as_if_saved_on_a_gpu(path) -> None:
    """Rewrite a torch.save file so that its tensors say they live on cuda:0, as a GPU-trained run's would."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            archive.writestr(info, data)


def test_gpu_saved_run_loads_on_cpu(run_factory, tmp_path):
    import shutil

    source = run_factory("DistMult", False)
    copy = tmp_path / "gpu-run"
    shutil.copytree(source, copy)
    for path in copy.rglob("*.pt"):
        _as_if_saved_on_a_gpu(path)
    if not torch.cuda.is_available():  # the rewrite is real: a plain load fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(next(copy.rglob("*.pt")), weights_only=True)
    test = load_run(source).splits["testing"][:2]
    expected = TracIn.from_run(source, progress=False).scores(test)
    assert torch.equal(TracIn.from_run(copy, progress=False).scores(test), expected)


def test_checkpoints_for_other_labels_are_refused(pipeline_run, tmp_path):
    folder, result, callback = pipeline_run
    content = torch.load(callback.saved[-1], weights_only=True)
    factory = result.training
    matching, other = tmp_path / "matching", tmp_path / "other"
    for directory, entities in ((matching, dict(factory.entity_to_id)), (other, {"somewhere": 0})):
        directory.mkdir()
        torch.save(
            {**content, "entity_to_id": entities, "relation_to_id": dict(factory.relation_to_id)},
            directory / "epoch_00005.pt",
        )
    assert len(load_run(folder, trust_pickle=True, checkpoint_dir=matching).checkpoints) == 1
    with pytest.raises(KGTracinError, match="other entity or relation labels"):
        load_run(folder, trust_pickle=True, checkpoint_dir=other)
