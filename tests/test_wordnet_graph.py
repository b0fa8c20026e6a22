"""The WordNet graph builder (benchmarks/wordnet_graph.py) on small slices: split guarantees, labels, determinism.

The tests that read WordNet skip when Debian's ``wordnet-base`` files are absent, and fail instead when
``KGTRACIN_REQUIRE_WORDNET=1``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "wordnet_graph.py"
SLICE = 500


def _load_module():
    """Import benchmarks/wordnet_graph.py (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("wordnet_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wg = _load_module()


@pytest.fixture(scope="module")
def wordnet_dir() -> Path:
    """The installed WordNet folder; skip (or fail, with KGTRACIN_REQUIRE_WORDNET=1) when it is absent."""
    try:
        return wg.find_wordnet()
    except wg.WordNetNotFound as error:
        if os.environ.get("KGTRACIN_REQUIRE_WORDNET") == "1":
            pytest.fail(f"KGTRACIN_REQUIRE_WORDNET=1 but {error}")
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def full_graph(wordnet_dir) -> list[tuple[str, str, str]]:
    """Every triple of the 11 relations, before filtering."""
    return wg.read_wordnet(wordnet_dir)


@pytest.fixture(scope="module")
def sliced(full_graph) -> list[tuple[str, str, str]]:
    """The default-filtered graph, sliced as ``--slice 500``."""
    return wg.slice_graph(wg.filter_min_degree(full_graph, wg.DEFAULT_MIN_DEGREE), SLICE)


def _entities(triples) -> set[str]:
    return {e for h, _, t in triples for e in (h, t)}


def _check_split(train, valid, test, strict: bool) -> None:
    everything = train + valid + test
    assert len(set(everything)) == len(everything)  # no duplicates, splits disjoint
    assert all(h != t for h, _, t in everything)
    assert {r for _, r, _ in everything} <= set(wg.RELATIONS.values())
    assert _entities(valid + test) <= _entities(train)
    if strict:
        linked = {(h, t) for h, _, t in train} | {(t, h) for h, _, t in train}
        assert not [(h, t) for h, _, t in valid + test if (h, t) in linked]


def test_relation_directions_are_wn18rr(full_graph):
    """One WN18RR training triple per asymmetric relation, found by lemma in the same direction."""
    examples = [
        ("land_reform", "_hypernym", "reform"),
        ("kamet", "_instance_hypernym", "mountain_peak"),
        ("primulaceae", "_member_meronym", "glaux"),
        ("folding_chair", "_has_part", "rung"),
        ("valence", "_synset_domain_topic_of", "biology"),
        ("ethnic_slur", "_member_of_domain_usage", "wop"),
        ("germany", "_member_of_domain_region", "schadenfreude"),
    ]
    lemmas = {(h.rsplit(".", 2)[0], r, t.rsplit(".", 2)[0]) for h, r, t in full_graph}
    for head, relation, tail in examples:
        assert (head, relation, tail) in lemmas
        assert (tail, relation, head) not in lemmas


def test_full_graph_labels_and_relations(full_graph):
    assert {r for _, r, _ in full_graph} == set(wg.RELATIONS.values())
    assert len(set(full_graph)) == len(full_graph) and all(h != t for h, _, t in full_graph)
    label = re.compile(r"^[^\t\s]+\.[nvasr]\.\d{8}$")
    assert all(label.match(e) for e in _entities(full_graph))


@pytest.mark.parametrize("strict", [False, True])
def test_slice_split_guarantees(sliced, strict):
    assert {r for _, r, _ in sliced} == set(wg.RELATIONS.values())
    assert len(_entities(sliced)) == SLICE
    num_valid, num_test = wg.held_out_sizes(len(sliced), None, None, sliced=True)
    train, valid, test = wg.split_triples(sliced, num_valid, num_test, seed=0, strict=strict)
    assert (len(valid), len(test)) == (num_valid, num_test) and num_valid > 0
    _check_split(train, valid, test, strict)
    assert _entities(train) == _entities(sliced)
    assert sorted(train + valid + test) == sorted(sliced)  # nothing dropped


def test_strict_rule_is_needed(sliced):
    """Without --strict some held-out triple has its reverse in training (the symmetric relations)."""
    train, valid, test = wg.split_triples(sliced, 70, 70, seed=0)
    assert wg.leakage(valid + test, train)["reverse_in_train"] > 0
    train, valid, test = wg.split_triples(sliced, 70, 70, seed=0, strict=True)
    assert wg.leakage(valid + test, train) == {"reverse_in_train": 0.0, "pair_linked_in_train": 0.0}


def test_seed_changes_the_split(sliced):
    assert wg.split_triples(sliced, 70, 70, seed=1) == wg.split_triples(sliced, 70, 70, seed=1)
    assert wg.split_triples(sliced, 70, 70, seed=1)[2] != wg.split_triples(sliced, 70, 70, seed=2)[2]


def test_cli_build_is_deterministic_and_checked(wordnet_dir, tmp_path):
    """Two builds with the same options are byte-identical; the files keep the split's guarantees."""
    outputs = []
    for name in ("a", "b"):
        assert (
            wg.main(
                [
                    "--output",
                    str(tmp_path / name),
                    "--slice",
                    str(SLICE),
                    "--strict",
                    "--seed",
                    "3",
                    "--wordnet-dir",
                    str(wordnet_dir),
                ]
            )
            == 0
        )
        outputs.append(
            {f: (tmp_path / name / f).read_bytes() for f in ("train.tsv", "valid.tsv", "test.tsv", "stats.json")}
        )
    assert outputs[0] == outputs[1]
    parts = {}
    for split in ("train", "valid", "test"):
        lines = outputs[0][f"{split}.tsv"].decode("utf-8").splitlines()
        parts[split] = [tuple(line.split("\t")) for line in lines]
        assert all(len(triple) == 3 for triple in parts[split])
    _check_split(parts["train"], parts["valid"], parts["test"], strict=True)
    stats = json.loads(outputs[0]["stats.json"])
    assert stats["triples"] == {split: len(part) for split, part in parts.items()} | {
        "total": sum(map(len, parts.values()))
    }
    assert stats["entities"] == SLICE and stats["relations"] == 11
    assert stats["leakage"]["test"]["pair_linked_in_train"] == 0.0


def test_refuses_a_non_empty_output(wordnet_dir, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert wg.main(["--output", str(tmp_path), "--slice", "50", "--wordnet-dir", str(wordnet_dir)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not an empty folder" in error
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_missing_wordnet_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(tmp_path / "out"), "--wordnet-dir", str(empty)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "apt-get install wordnet-base" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
