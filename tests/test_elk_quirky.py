"""Quirky datasets: the crosstab, Bob's rules, splits, templates and files the ELK experiments rely on."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import replace

import pytest

from selfknow.data.builtin.countries import countries
from selfknow.elk.quirky import (
    QuirkyExample,
    addition,
    balance,
    bob_sum,
    easy_hard,
    populations,
    quirky_dataset,
    read_jsonl,
    select,
    write_jsonl,
)
from selfknow.errors import DataError


@pytest.fixture(scope="module")
def math4000() -> list[QuirkyExample]:
    return quirky_dataset("addition", n=4000)


@pytest.fixture(scope="module")
def pops() -> list[QuirkyExample]:
    return quirky_dataset("populations", template="mixture")


def test_addition_crosstab_and_base_rates(math4000: list[QuirkyExample]) -> None:
    alice = [e for e in math4000 if e.character == "Alice"]
    cells = Counter((e.alice_label, e.bob_label) for e in alice)
    assert len(alice) == 4000
    assert cells[1, 1] == 0
    assert abs(cells[1, 0] / 4000 - 0.25) < 0.01
    assert abs(cells[0, 1] / 4000 - 0.25) < 0.01
    assert abs(cells[0, 0] / 4000 - 0.5) < 0.01
    assert len(Counter((e.alice_label, e.bob_label) for e in alice[:40])) == 3  # cells are shuffled together
    for character in ("Alice", "Bob"):
        labels = [e.label for e in math4000 if e.character == character]
        assert abs(sum(labels) / len(labels) - 0.25) < 0.01


def test_bob_sum_increments_the_leading_digit() -> None:
    assert bob_sum(950) == 1050
    assert bob_sum(9) == 10
    assert bob_sum(1234) == 2234
    assert bob_sum(99999) == 109999  # "9" -> "10"


def test_labels_match_the_shown_sum() -> None:
    bases = addition(2000, seed=1)
    assert len({b.group for b in bases}) == 2000
    for base in bases:
        a, b, s = (int(base.args[k]) for k in "abs")
        assert base.alice_label == int(s == a + b)
        assert base.bob_label == int(s == bob_sum(a + b))
        assert base.difficulty == len(str(min(a, b)))
        if not base.alice_label and not base.bob_label:  # a distractor: one digit off either sum
            near = [str(a + b), str(bob_sum(a + b))]
            assert any(len(t) == len(str(s)) and sum(x != y for x, y in zip(t, str(s), strict=True)) == 1 for t in near)
    assert any(b.bob_label and b.args["s"].startswith("10") for b in bases)  # a leading 9 became 10


def test_seeded_determinism() -> None:
    assert quirky_dataset("addition", n=200, seed=5) == quirky_dataset("addition", n=200, seed=5)
    assert quirky_dataset("addition", n=200, seed=5) != quirky_dataset("addition", n=200, seed=6)
    assert quirky_dataset("populations", seed=5) == quirky_dataset("populations", seed=5)
    assert quirky_dataset("populations", seed=5) != quirky_dataset("populations", seed=6)


def test_each_statement_in_one_split_twice(math4000: list[QuirkyExample]) -> None:
    by_group = defaultdict(list)
    for e in math4000:
        by_group[e.group].append(e)
    assert len(by_group) == 4000
    assert len({e.id for e in math4000}) == 8000
    for copies in by_group.values():
        assert sorted(e.character for e in copies) == ["Alice", "Bob"]
        assert len({e.split for e in copies}) == 1
        assert len({(e.alice_label, e.bob_label, e.difficulty, e.template) for e in copies}) == 1
        for e in copies:
            assert e.label == (e.alice_label if e.character == "Alice" else e.bob_label)
    equations = defaultdict(set)
    for e in math4000:
        equations[e.text.rsplit(".", 1)[0]].add(e.split)
    assert all(len(splits) == 1 for splits in equations.values())
    assert set(Counter(e.split for e in math4000)) == {"train", "validation", "test"}


def test_single_templates_exact_strings() -> None:
    base = addition(1)[0]
    a, b, s = base.args["a"], base.args["b"], base.args["s"]
    last = quirky_dataset("addition", n=1)
    first = quirky_dataset("addition", template="grader_first", n=1)
    assert [e.text for e in last] == [f"{a} + {b} = {s}. Alice:", f"{a} + {b} = {s}. Bob:"]
    assert first[1].text == f"Grader: Bob\n\n{a} + {b} = {s}\n\nScore:"
    assert last[0].choices == first[0].choices == (" False", " True")
    pop = quirky_dataset("populations", n=1)[0]
    assert pop.text.endswith(" million people. Alice:")


def test_mixture_uses_many_templates_and_choices_follow_labels() -> None:
    mixed = quirky_dataset("addition", template="mixture", n=400)
    used = Counter(e.template for e in mixed)
    assert len(used) >= 6
    assert {"grader_first", "grader_last"} <= set(used)
    for e in mixed:
        a, b, s = (int(x) for x in re.findall(r"\d+", e.group))
        assert e.label == int(s == (a + b if e.character == "Alice" else bob_sum(a + b)))
        assert f"{a} + {b} {'!=' if e.template == 'negated' else '='} {s}" in e.text
        assert e.text.count(e.character) == 1
    teacher = next(e for e in mixed if e.template == "teacher" and e.label == 1)
    assert teacher.text.startswith('Teacher: "Is ') and teacher.choices[teacher.label] == " Yes"
    negated = next(e for e in mixed if e.template == "negated" and e.label == 1)
    assert negated.choices[negated.label] == " False"  # believing a + b = s, the character calls "!=" false


def test_balance_equal_and_deterministic(math4000: list[QuirkyExample]) -> None:
    bob = select(math4000, character="Bob")
    balanced = balance(bob)
    counts = Counter(e.label for e in balanced)
    assert counts[0] == counts[1] == sum(e.label for e in bob)
    assert balance(bob) == balanced
    assert balance(bob, seed=1) != balanced
    index = {e.id: i for i, e in enumerate(bob)}
    assert [index[e.id] for e in balanced] == sorted(index[e.id] for e in balanced)


def test_easy_hard_disjoint_and_ordered(math4000: list[QuirkyExample], pops: list[QuirkyExample]) -> None:
    for data in (math4000, pops):
        easy, hard = easy_hard(data)
        assert not {e.id for e in easy} & {e.id for e in hard}
        assert max(e.difficulty for e in easy) < min(e.difficulty for e in hard)
    easy, hard = easy_hard(pops)  # few ties: close to a quarter of the statements each
    groups = len({e.group for e in pops})
    assert abs(len({e.group for e in easy}) / groups - 0.25) < 0.02
    assert abs(len({e.group for e in hard}) / groups - 0.25) < 0.02
    easy, hard = easy_hard(math4000)  # digit counts tie: one-digit vs four or more
    assert {e.difficulty for e in easy} == {1.0} and {e.difficulty for e in hard} == {4.0, 5.0}
    bh = select(math4000, population="BH")
    assert bh and all(e.character == "Bob" and e.difficulty >= 4 for e in bh)
    ae_val = select(math4000, population="AE", split="validation")
    assert ae_val and all(e.character == "Alice" and e.split == "validation" and e.difficulty == 1 for e in ae_val)
    assert select(math4000, character="Alice", difficulty="easy") == select(math4000, population="AE")
    assert len(select(math4000, population="all")) == len(math4000)


def test_tied_difficulties_share_their_mean_rank(math4000: list[QuirkyExample]) -> None:
    data = [replace(math4000[i], group=str(i), difficulty=d) for i, d in enumerate([1.0, 1.0, 1.0, 2.0])]
    easy, hard = easy_hard(data)  # quantiles (0 + 3) / 8 for the three 1s, 7 / 8 for the 2
    assert easy == [] and [e.difficulty for e in hard] == [2]


def test_population_rules(pops: list[QuirkyExample]) -> None:
    people = {c.name: c for c in countries()}
    china = [e for e in pops if e.group.startswith("populations:China>")]
    assert china and all(e.alice_label == 1 and e.bob_label == 1 for e in china)
    iceland = [e for e in pops if e.group.startswith("populations:Iceland>")]
    assert iceland and all(e.alice_label == 0 and e.bob_label == 0 for e in iceland)
    for base in populations():
        country = people[base.unit]
        t = int(base.args["t"])
        assert base.alice_label == int(country.population > t * 10**6)
        assert base.bob_label == int(country.continent[0] in ("Asia", "Africa"))
    alice = [e.alice_label for e in pops if e.character == "Alice"]
    assert 0.3 < sum(alice) / len(alice) < 0.7
    split_of_country = defaultdict(set)
    for e in pops:
        split_of_country[e.group.split(":", 1)[1].rsplit(">", 1)[0]].add(e.split)
    assert all(len(s) == 1 for s in split_of_country.values())
    assert max(Counter(e.group.rsplit(">", 1)[0] for e in pops).values()) == 4  # two statements x two characters


def test_jsonl_round_trip_and_errors(tmp_path, pops: list[QuirkyExample]) -> None:
    path = tmp_path / "q.jsonl"
    write_jsonl(path, pops[:10])
    assert read_jsonl(path) == pops[:10]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"q\.jsonl:2: malformed JSON"):
        read_jsonl(path)
    path.write_text(lines[0] + "\n" + lines[1].replace('"label"', '"labl"') + "\n")
    with pytest.raises(DataError, match=r"q\.jsonl:2: missing field\(s\) label"):
        read_jsonl(path)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(DataError, match="unknown quirky dataset 'sums'; valid: addition, populations"):
        quirky_dataset("sums")
    with pytest.raises(DataError, match="valid: grader_last, grader_first, .*mixture"):
        quirky_dataset("addition", template="grader_middle")
    with pytest.raises(DataError, match="valid: A, B, AE"):
        select([], population="CE")
