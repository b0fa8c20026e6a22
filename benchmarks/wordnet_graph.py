"""A WN18RR-like knowledge graph built from the WordNet 3.0 database files of Debian's ``wordnet-base``.

Usage: ``python benchmarks/wordnet_graph.py --output DIR [--seed 0] [--min-degree 3] [--strict] [--slice N]``.

The data files (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``; format in wndb(5)) are parsed here, with
no download and no NLTK. Entities are synsets, labelled ``<first lemma>.<synset type>.<byte offset>`` (for example
``dog.n.02084071``; the type is n, v, a, s or r as in WN18RR's names, the offset is the synset's byte offset in
the installed data file). Relations are WN18RR's 11, each read from one WordNet pointer symbol in the direction
WN18RR uses (see ``RELATIONS``); lexical pointers (``+`` and some ``^``, ``-r``, ``-u``) are lifted to their
synsets. Triples are deduplicated and self-loops dropped.

``--min-degree K`` keeps the synsets linked to at least K other synsets in the full 11-relation graph (one pass:
the counts are not recomputed after the cut) and the triples among them. ``--slice N`` then keeps N synsets grown
around one seed triple per relation, for tests. The split is seeded; every entity of a validation or test triple
occurs in training, and ``--strict`` adds FB15k-237's rule: no validation or test triple joins two entities linked
in training. Writes ``train.tsv``, ``valid.tsv``, ``test.tsv`` (``head<TAB>relation<TAB>tail``) and ``stats.json``
into a new or empty ``--output`` folder; the same files and options give byte-identical output.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Triple = tuple[str, str, str]

#: WordNet pointer symbol -> WN18RR relation name, in WN18RR's direction (source synset is the head):
#: ``land_reform _hypernym reform``, ``primulaceae _member_meronym glaux``, ``folding_chair _has_part rung``,
#: ``valence _synset_domain_topic_of biology``, ``ethnic_slur _member_of_domain_usage wop`` and
#: ``france _member_of_domain_region sextillion``: the usage and region relations are WordNet's "member of this
#: domain" pointers ``-u``/``-r`` (domain -> member), not ``;u``/``;r``. The inverse pointers (``~``, ``~i``,
#: ``#m``, ``#p``, ``;u``, ``;r``, ``-c``) are the relations WN18RR removed; the symmetric ones (``+``, ``^``,
#: ``$``, ``&``) keep both directions as WordNet lists them.
RELATIONS = {
    "@": "_hypernym",
    "+": "_derivationally_related_form",
    "@i": "_instance_hypernym",
    "^": "_also_see",
    "%m": "_member_meronym",
    ";c": "_synset_domain_topic_of",
    "%p": "_has_part",
    "-u": "_member_of_domain_usage",
    "-r": "_member_of_domain_region",
    "$": "_verb_group",
    "&": "_similar_to",
}
DATA_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_MIN_DEGREE = 3
DEFAULT_HELD_OUT = 3000  # triples in each of valid and test, for the whole graph
DEFAULT_SLICE_FRACTION = 0.05  # of the slice's triples in each of valid and test, with --slice
INSTALL_HINT = "apt-get install wordnet-base"


class WordNetNotFound(FileNotFoundError):
    """The WordNet database files are not where they were looked for."""


class WordNetFormatError(ValueError):
    """A data file line that does not follow wndb(5)."""


class OutputNotEmpty(FileExistsError):
    """The output folder exists and holds files."""


@dataclass
class WordNetGraph:
    """A split graph: labelled triples of each split (sorted) and their statistics."""

    train: list[Triple]
    valid: list[Triple]
    test: list[Triple]
    stats: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- reading


def find_wordnet(directory: str | os.PathLike | None = None) -> Path:
    """The folder holding the four data files: ``directory``, else ``$WNSEARCHDIR``, else /usr/share/wordnet.

    :raises WordNetNotFound: with a one-line message naming the folder and the package to install
    """
    if directory is None:
        directory = os.environ.get("WNSEARCHDIR") or DEFAULT_WORDNET_DIR
    folder = Path(directory)
    missing = [name for name in DATA_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise WordNetNotFound(
            f"WordNet 3.0 database files not found in {folder} (missing {', '.join(missing)}): "
            f"install them with `{INSTALL_HINT}` or pass --wordnet-dir"
        )
    return folder.resolve()


def iter_synsets(path: Path) -> Iterator[tuple[str, str, str, list[tuple[str, str, str]]]]:
    """The synsets of one data file: ``(offset, ss_type, first word, [(pointer symbol, offset, pos), ...])``.

    Header lines (two spaces and a line number) are skipped; frames and gloss are not read.

    :raises WordNetFormatError: naming the file and line of a line that does not parse
    """
    with open(path, encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.startswith("  "):
                continue
            fields = line.split(" | ", 1)[0].split()
            try:
                offset, ss_type, w_cnt = fields[0], fields[2], int(fields[3], 16)
                at = 4 + 2 * w_cnt
                p_cnt = int(fields[at])
                if len(fields) < at + 1 + 4 * p_cnt or ss_type not in {"n", "v", "a", "s", "r"}:
                    raise ValueError
            except (IndexError, ValueError):
                raise WordNetFormatError(f"{path} line {number} does not follow wndb(5)") from None
            pointers = [(fields[i], fields[i + 1], fields[i + 2]) for i in range(at + 1, at + 1 + 4 * p_cnt, 4)]
            yield offset, ss_type, fields[4], pointers


def synset_label(word: str, ss_type: str, offset: str) -> str:
    """``<lemma>.<type>.<offset>``: the word lower-cased, without an adjective marker such as ``(a)``."""
    lemma = re.sub(r"\([a-z]+\)$", "", word).lower()
    return f"{lemma}.{ss_type}.{offset}"


def read_wordnet(folder: Path) -> list[Triple]:
    """All triples of the 11 relations in the WordNet files of ``folder``: unique, no self-loops, sorted."""
    labels: dict[tuple[str, str], str] = {}
    pointers: list[tuple[tuple[str, str], str, tuple[str, str]]] = []
    for pos, name in DATA_FILES.items():
        for offset, ss_type, word, links in iter_synsets(folder / name):
            labels[pos, offset] = synset_label(word, ss_type, offset)
            for symbol, target, target_pos in links:
                if symbol in RELATIONS:
                    pointers.append(((pos, offset), symbol, ("a" if target_pos == "s" else target_pos, target)))
    dangling = next((target for _, _, target in pointers if target not in labels), None)
    if dangling is not None:
        raise WordNetFormatError(f"{folder}: a pointer names synset {dangling[1]} ({dangling[0]}), which is missing")
    triples = {
        (labels[source], RELATIONS[symbol], labels[target]) for source, symbol, target in pointers if source != target
    }
    return sorted(triples)


def source_info(folder: Path) -> dict:
    """Where the graph came from: owning Debian package and version, database version, file digests.

    The folder itself is left out, so that the same files give the same ``stats.json`` wherever they lie.
    """
    info: dict = {"package": None, "package_version": None}
    header = (folder / DATA_FILES["n"]).read_text(encoding="ascii")[:3000]
    version = re.search(r"WordNet (\d+\.\d+)", header)
    info["database"] = f"WordNet {version.group(1)}" if version else None
    info.update(_debian_package(folder / DATA_FILES["n"]))
    info["sha256"] = {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(DATA_FILES.values())
    }
    return info


def _debian_package(path: Path) -> dict:
    """``{"package", "package_version"}`` of the Debian package owning ``path``; empty when dpkg cannot tell."""
    if shutil.which("dpkg-query") is None:
        return {}
    try:
        owner = subprocess.run(["dpkg-query", "-S", str(path)], capture_output=True, text=True, check=True)
        package = owner.stdout.split(":", 1)[0].strip()
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"package": package, "package_version": version.stdout.strip()}


# ---------------------------------------------------------------------------------------------------- selecting


def degrees(triples: Iterable[Triple]) -> Counter:
    """Number of triples each entity takes part in (as head or tail)."""
    counts: Counter = Counter()
    for head, _, tail in triples:
        counts[head] += 1
        counts[tail] += 1
    return counts


def neighbour_counts(triples: Iterable[Triple]) -> Counter:
    """Number of other entities each entity is linked to, by any relation, in either direction."""
    pairs = {(h, t) for h, _, t in triples} | {(t, h) for h, _, t in triples}
    return Counter(h for h, _ in pairs)


def filter_min_degree(triples: Sequence[Triple], min_degree: int) -> list[Triple]:
    """The triples whose two entities are each linked to at least ``min_degree`` others in ``triples``.

    One pass: the counts are those of ``triples`` and are not recomputed after the cut. Counting linked entities
    rather than triples keeps the symmetric relations, listed in both directions, from counting twice.
    """
    if min_degree <= 1:
        return list(triples)
    count = neighbour_counts(triples)
    return [t for t in triples if count[t[0]] >= min_degree and count[t[2]] >= min_degree]


def slice_graph(triples: Sequence[Triple], size: int) -> list[Triple]:
    """The triples among ``size`` entities grown around one seed triple per relation.

    The seed of a relation is its triple whose entities have the most triples (ties: the first label). Growth
    takes turns over the relations: each turn adds, for one relation, the outside entity joined to the chosen
    ones by that relation with the most triples to the chosen ones (ties: more triples overall, first label),
    so that rare relations get their share. Every chosen entity has a triple inside the slice; there are fewer
    than ``size`` when the graph runs out.
    """
    degree = degrees(triples)
    neighbours: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for head, relation, tail in triples:
        neighbours[head].append((relation, tail))
        neighbours[tail].append((relation, head))
    relations = [r for r in RELATIONS.values() if any(t[1] == r for t in triples)]
    chosen: set[str] = set()
    links: Counter = Counter()  # triples between an outside entity and the chosen ones
    joined: dict[str, set[str]] = defaultdict(set)  # relations joining an outside entity to the chosen ones
    frontier: dict[str, list] = {r: [] for r in relations}  # heaps of (-links, -degree, entity)

    def choose(entity: str) -> None:
        chosen.add(entity)
        touched = set()
        for relation, other in neighbours[entity]:
            if other not in chosen:
                links[other] += 1
                joined[other].add(relation)
                touched.add(other)
        for other in touched:
            for relation in joined[other]:
                heapq.heappush(frontier[relation], (-links[other], -degree[other], other))

    for relation in relations:
        head, _, tail = min((t for t in triples if t[1] == relation), key=lambda t: (-degree[t[0]] - degree[t[2]], t))
        if len(chosen | {head, tail}) <= size:
            for entity in (head, tail):
                if entity not in chosen:
                    choose(entity)
    while len(chosen) < size and any(frontier.values()):
        for relation in relations:
            heap = frontier[relation]
            while heap and (heap[0][2] in chosen or -heap[0][0] != links[heap[0][2]]):
                heapq.heappop(heap)  # stale: already chosen, or pushed again with more links
            if heap and len(chosen) < size:
                choose(heapq.heappop(heap)[2])
    return [t for t in triples if t[0] in chosen and t[2] in chosen]


# ---------------------------------------------------------------------------------------------------- splitting


def held_out_sizes(total: int, valid: float | None, test: float | None, sliced: bool) -> tuple[int, int]:
    """Numbers of validation and test triples: a value >= 1 is a count, one below 1 a fraction of ``total``.

    Defaults: 3,000 each for the whole graph, 5% each for a slice.
    """
    default = DEFAULT_SLICE_FRACTION if sliced else DEFAULT_HELD_OUT

    def size(value: float | None) -> int:
        value = default if value is None else value
        return int(value) if value >= 1 else round(value * total)

    return size(valid), size(test)


def split_triples(
    triples: Sequence[Triple], num_valid: int, num_test: int, seed: int = 0, strict: bool = False
) -> tuple[list[Triple], list[Triple], list[Triple]]:
    """Seeded train/valid/test split in which every entity of a held-out triple keeps a training triple.

    Triples are taken in a seeded random order and held out only while both of their entities keep at least one
    training triple (the others stay in training), first for validation, then for test. With ``strict``
    (FB15k-237's rule) the unit is an entity pair: all triples joining two entities, in either direction and by
    any relation, are held out together in one split or all stay in training, so no held-out triple joins two
    entities linked in training; nothing is dropped. A split may come out smaller than asked when too few
    triples qualify.

    :return: sorted training, validation and test triples
    """
    unique = sorted(set(triples))
    groups: dict[tuple, list[Triple]] = defaultdict(list)  # keyed by entity pair (strict) or by triple
    for triple in unique:
        head, _, tail = triple
        groups[(min(head, tail), max(head, tail)) if strict else triple].append(triple)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    left = degrees(unique)  # training triples of each entity
    wanted = [num_valid, num_test]
    held: list[list[Triple]] = [[], []]
    part = 0
    for group in order:
        while part < 2 and len(held[part]) >= wanted[part]:
            part += 1
        if part == 2:
            break
        head, _, tail = group[0]
        if len(held[part]) + len(group) > wanted[part] or min(left[head], left[tail]) <= len(group):
            continue
        left[head] -= len(group)
        left[tail] -= len(group)
        held[part].extend(group)
    out = {t for part_triples in held for t in part_triples}
    return [t for t in unique if t not in out], sorted(held[0]), sorted(held[1])


# ---------------------------------------------------------------------------------------------------- statistics


def leakage(held: Sequence[Triple], train: Sequence[Triple]) -> dict:
    """Fractions of held-out triples whose reverse is in training, and whose two entities are linked there."""
    triples = set(train)
    pairs = {(h, t) for h, _, t in train}
    if not held:
        return {"reverse_in_train": 0.0, "pair_linked_in_train": 0.0}
    reverse = sum((t, r, h) in triples for h, r, t in held)
    linked = sum((h, t) in pairs or (t, h) in pairs for h, _, t in held)
    return {"reverse_in_train": round(reverse / len(held), 4), "pair_linked_in_train": round(linked / len(held), 4)}


def graph_stats(train: Sequence[Triple], valid: Sequence[Triple], test: Sequence[Triple]) -> dict:
    """Entities (with their synset types), relations, triples per split and per relation, and leakage."""
    splits = {"train": train, "valid": valid, "test": test}
    entities = {e for part in splits.values() for h, _, t in part for e in (h, t)}
    per_relation = {name: {split: 0 for split in splits} for name in RELATIONS.values()}
    for split, part in splits.items():
        for _, relation, _ in part:
            per_relation[relation][split] += 1
    for counts in per_relation.values():
        counts["total"] = sum(counts.values())
    return {
        "entities": len(entities),
        "entity_types": dict(sorted(Counter(e.rsplit(".", 2)[1] for e in entities).items())),
        "relations": sum(any(counts.values()) for counts in per_relation.values()),
        "triples": {split: len(part) for split, part in splits.items()} | {"total": sum(map(len, splits.values()))},
        "per_relation": per_relation,
        "leakage": {"valid": leakage(valid, train), "test": leakage(test, train)},
    }


# ---------------------------------------------------------------------------------------------------- building


def build_graph(
    wordnet_dir: str | os.PathLike | None = None,
    seed: int = 0,
    min_degree: int = DEFAULT_MIN_DEGREE,
    strict: bool = False,
    slice_size: int | None = None,
    valid: float | None = None,
    test: float | None = None,
) -> WordNetGraph:
    """Read WordNet, filter, slice and split; see the module docstring.

    :param valid: validation triples: a count (>= 1) or a fraction (< 1); see :func:`held_out_sizes`
    :raises WordNetNotFound: when the data files are not found
    """
    folder = find_wordnet(wordnet_dir)
    triples = filter_min_degree(read_wordnet(folder), min_degree)
    if slice_size is not None:
        triples = slice_graph(triples, slice_size)
    num_valid, num_test = held_out_sizes(len(triples), valid, test, slice_size is not None)
    train, valid_triples, test_triples = split_triples(triples, num_valid, num_test, seed=seed, strict=strict)
    options = {
        "seed": seed,
        "min_degree": min_degree,
        "strict": strict,
        "slice": slice_size,
        "valid": num_valid,
        "test": num_test,
    }
    stats = {"source": source_info(folder), "options": options} | graph_stats(train, valid_triples, test_triples)
    return WordNetGraph(train, valid_triples, test_triples, stats)


def prepare_output(output: str | os.PathLike, create: bool = True) -> Path:
    """Create ``output`` (with parents), or accept it when it is an empty folder; ``create=False`` only checks.

    :raises OutputNotEmpty: when it exists and is not an empty folder
    """
    folder = Path(output)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputNotEmpty(f"output {folder} exists and is not an empty folder; choose a new one")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_graph(output: str | os.PathLike, graph: WordNetGraph) -> Path:
    """Write the three TSV files and ``stats.json`` into a new or empty folder ``output``."""
    folder = prepare_output(output)
    for name, part in (("train", graph.train), ("valid", graph.valid), ("test", graph.test)):
        with open(folder / f"{name}.tsv", "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(f"{h}\t{r}\t{t}\n" for h, r, t in part)
    (folder / "stats.json").write_text(json.dumps(graph.stats, indent=2) + "\n", encoding="utf-8")
    return folder


def count_or_fraction(text: str) -> float:
    """argparse type of --valid/--test: a count (a whole number >= 1) or a fraction in (0, 1)."""
    value = float(text)
    if not 0 < value < float("inf") or (value >= 1 and not value.is_integer()):
        raise ValueError(text)
    return value


def positive_int(text: str) -> int:
    """argparse type of --slice: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build, write, and print one summary line; failures are one line on stderr, exit status 1."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="new (or empty) folder for the files")
    parser.add_argument("--wordnet-dir", help="folder of data.noun etc. (default: $WNSEARCHDIR, /usr/share/wordnet)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument(
        "--min-degree",
        type=int,
        default=DEFAULT_MIN_DEGREE,
        help=f"keep synsets linked to at least this many others (default {DEFAULT_MIN_DEGREE})",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="no valid/test triple joins two entities linked in training (FB15k-237's rule)",
    )
    parser.add_argument(
        "--slice",
        type=positive_int,
        dest="slice_size",
        metavar="N",
        help="keep N synsets grown around one seed triple per relation (for tests)",
    )
    for split in ("valid", "test"):
        parser.add_argument(
            f"--{split}",
            type=count_or_fraction,
            help=f"{split} triples: count or fraction (default 3000, or 0.05 with --slice)",
        )
    args = parser.parse_args(argv)
    try:
        prepare_output(args.output, create=False)  # fail before the work
        graph = build_graph(
            args.wordnet_dir,
            seed=args.seed,
            min_degree=args.min_degree,
            strict=args.strict,
            slice_size=args.slice_size,
            valid=args.valid,
            test=args.test,
        )
        folder = write_graph(args.output, graph)
    except (WordNetNotFound, WordNetFormatError, OutputNotEmpty) as error:
        print(f"wordnet_graph: {error}", file=sys.stderr)
        return 1
    stats, asked = graph.stats, (graph.stats["options"]["valid"], graph.stats["options"]["test"])
    short = "" if (len(graph.valid), len(graph.test)) == asked else f" (asked {asked[0]}/{asked[1]}: too few qualify)"
    print(
        f"{folder}: {stats['entities']} entities, {stats['relations']} relations, train/valid/test "
        f"{len(graph.train)}/{len(graph.valid)}/{len(graph.test)}{short}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
