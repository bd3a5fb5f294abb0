"""Dataset sources: every registered source loads valid records, and each source's promises hold."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import datasets
import pytest

from selfknow.data import builtin, files, hub  # noqa: F401  (registers every source)
from selfknow.data.builtin import SPLIT_FRACTIONS
from selfknow.data.builtin.arithmetic import ARITHMETIC_TASKS, equations
from selfknow.data.builtin.countries import (
    clean_capital,
    clean_currency,
    clean_highest_point,
    clean_internet_code,
    clean_nationality,
    countries,
)
from selfknow.data.records import SPLITS, Record, write_records
from selfknow.data.registry import SOURCES, load_dataset
from selfknow.data.splits import rng_for, split_of, with_choices
from selfknow.errors import DataError
from tests.conftest import SHARED_MMLU

MMLU_DIR = SHARED_MMLU
BUILTINS = ("countries", "elements", "arithmetic")

# ----------------------------------------------------------------------------------------- fixtures

# Rows shaped like the real hub datasets (field names, nesting and types), a few per split.
HUB_ROWS: dict[tuple[str, str | None], dict[str, list[dict[str, Any]]]] = {
    ("cais/mmlu", "all"): {
        split: [
            {
                "question": f"What is {i} + 1? ({split})",
                "subject": subject,
                "choices": [str(i + k) for k in range(4)],
                "answer": 1,
            }
            for subject in ("anatomy", "high_school_us_history")
            for i in range(2)
        ]
        for split in ("dev", "validation", "test")
    },
    **{
        ("allenai/ai2_arc", config): {
            split: [
                {
                    "id": f"Mercury_{split}_1",
                    "question": "Which is a gas at room temperature?",
                    "choices": {"text": ["iron", "oxygen", "salt", "wood"], "label": ["A", "B", "C", "D"]},
                    "answerKey": "B",
                },
                {
                    "id": f"NYSEDREGENTS_{split}_2",
                    "question": "How many legs does an insect have?",
                    "choices": {"text": ["4", "6", "8"], "label": ["1", "2", "3"]},
                    "answerKey": "2",
                },
            ]
            for split in ("train", "validation", "test")
        }
        for config in ("ARC-Easy", "ARC-Challenge")
    },
    ("mandarjoshi/trivia_qa", "rc.nocontext"): {
        split: [
            {
                "question": "Which planet is known as the Red Planet?",
                "question_id": f"tc_{split}_1",
                "question_source": "http://www.triviacountry.com/",
                "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
                "search_results": {
                    "description": [],
                    "filename": [],
                    "rank": [],
                    "title": [],
                    "url": [],
                    "search_context": [],
                },
                "answer": {
                    "aliases": ["Mars", "Mars (planet)", "Planet Mars", "Mars"],
                    "normalized_aliases": ["mars", "mars planet", "planet mars"],
                    "matched_wiki_entity_name": "",
                    "normalized_matched_wiki_entity_name": "",
                    "normalized_value": "mars",
                    "type": "WikipediaEntity",
                    "value": "Mars",
                },
            }
        ]
        for split in ("train", "validation")
    },
    ("allenai/sciq", None): {
        split: [
            {
                "question": "What type of organism is commonly used in preparation of foods such as cheese?",
                "distractor3": "viruses",
                "distractor1": "protozoa",
                "distractor2": "gymnosperms",
                "correct_answer": "mesophilic organisms",
                "support": "Mesophiles grow best in moderate temperature.",
            }
        ]
        for split in ("train", "validation", "test")
    },
    ("tau/commonsense_qa", None): {
        "train": [
            {
                "id": "075e483d21c29a511267ef62bedc0461",
                "question": "The sanctions against the school were a punishing blow. What did they ignore?",
                "question_concept": "punishing",
                "choices": {
                    "label": ["A", "B", "C", "D", "E"],
                    "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"],
                },
                "answerKey": "A",
            }
        ],
        "validation": [
            {
                "id": "1afa02df02c908a558b4036e80242fac",
                "question": "A revolving door is convenient for two direction travel, but serves as what?",
                "question_concept": "revolving door",
                "choices": {
                    "label": ["A", "B", "C", "D", "E"],
                    "text": ["bank", "library", "mall", "new york", "store"],
                },
                "answerKey": "A",
            },
            {
                "id": "unlabeled-in-validation",
                "question": "An unlabeled row?",
                "question_concept": "row",
                "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["a", "b", "c", "d", "e"]},
                "answerKey": "",
            },
        ],
    },
}


HUB_ROWS["cais/mmlu", "anatomy"] = {
    split: [row for row in rows if row["subject"] == "anatomy"] for split, rows in HUB_ROWS["cais/mmlu", "all"].items()
}


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None, str]]:
    """Serve HUB_ROWS through ``datasets.load_dataset``; a split that is not there fails as the hub does."""
    calls: list[tuple[str, str | None, str]] = []

    def load(path: str, name: str | None = None, split: str | None = None, **_: Any) -> datasets.Dataset:
        calls.append((path, name, split))
        rows = HUB_ROWS[path, name]
        if split not in rows:
            raise ValueError(f'Unknown split "{split}". Should be one of {list(rows)}.')
        return datasets.Dataset.from_list(rows[split])

    monkeypatch.setattr(datasets, "load_dataset", load)
    return calls


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


def mmlu_folder(root: Path) -> Path:
    write(
        root / "dev" / "anatomy_dev.csv",
        'What is 1+1?,1,2,3,4,B\r\n"A ""quoted"", multi\nline question",x,y,z,w,D\r\n',
    )
    write(root / "val" / "anatomy_val.csv", "Which bone?,femur,skull,rib,spine,A\r\n")
    write(root / "test" / "anatomy_test.csv", "Which organ pumps blood?,lung,heart,liver,skin,B\r\n")
    return root


def table_rows() -> list[dict[str, Any]]:
    return [
        {
            "question": f"What is {i} squared?",
            "answer": str(i * i),
            "choices": [str(i * i), str(i + 1), "0"],
            "aliases": [f"{i}²"],
        }
        for i in range(2, 8)
    ]


CT_HEADER = "context,target,target_prompt,prompt,output,query_label\r\n"
CT_OE = '"Question: What is the capital of France?",Paris,"\nAnswer:",,"  Paris\n\nIt is in France.",1\r\n'
CT_CHOICE = '"Question:\nWhich is red?\n\nChoices:\n  (a): grass\n  (b): blood\n  (c): sky",b,"\nAnswer:",,b,0\r\n'


def source_spec(name: str, tmp_path: Path) -> str:
    """The spec that loads each registered source from a small fixture; a new source needs a line here."""
    if SOURCES[name].kind in ("built-in", "hub"):
        return name
    if name == "mmlu-csv":
        return f"mmlu-csv:{mmlu_folder(tmp_path / 'mmlu')}"
    if name == "csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["question", "answer", "choices", "aliases"])
        writer.writerows(
            [r["question"], r["answer"], json.dumps(r["choices"]), "|".join(r["aliases"])] for r in table_rows()
        )
        return f"csv:{write(tmp_path / 'squares.csv', text.getvalue())}"
    if name == "jsonl":
        lines = "".join(json.dumps(row) + "\n" for row in table_rows())
        return f"jsonl:{write(tmp_path / 'squares.jsonl', lines)}"
    if name == "ct":
        for split in ("train", "validation", "test"):
            write(tmp_path / "ct" / split / "rows_0.csv", CT_HEADER + CT_OE + CT_CHOICE)
        return f"ct:{tmp_path / 'ct'}"
    if name == "resplit":
        return f"resplit:mmlu-csv:{mmlu_folder(tmp_path / 'mmlu')}"
    raise AssertionError(f"no test fixture for the dataset source '{name}': add one to source_spec")


# ----------------------------------------------------------------------------------------- every source


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_loads_valid_records_in_each_of_its_formats(name: str, tmp_path: Path, fake_hub: Any) -> None:
    spec = source_spec(name, tmp_path)
    ids_by_format = {}
    for fmt in SOURCES[name].formats:
        records = load_dataset(spec, format=fmt)
        for record in records:
            record.validate()
            assert record.format == fmt and record.dataset
            if fmt == "choice":
                assert record.choices[record.answer_index] == record.answer
        ids = [r.id for r in records]
        assert len(set(ids)) == len(ids)
        splits = {r.split for r in records}
        assert splits and splits <= set(SPLITS)
        ids_by_format[fmt] = set(ids)
    if len(ids_by_format) == 2 and name != "ct":  # ct rows have one format each
        assert not ids_by_format["oe"] & ids_by_format["choice"]


# ----------------------------------------------------------------------------------------- built-in sources


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_splits_are_disjoint_in_entities(name: str) -> None:
    for seed in (0, 1):
        splits_of: dict[str, set[str]] = defaultdict(set)
        for record in load_dataset(name, format="choice", seed=seed):
            splits_of[record.entity].add(record.split)
        assert all(len(s) == 1 for s in splits_of.values())
        assert set().union(*splits_of.values()) == {"train", "validation", "test"}


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_is_deterministic_for_a_seed_and_changes_with_another(name: str) -> None:
    first = [r.to_json() for r in load_dataset(name, format="choice", seed=3)]
    again = [r.to_json() for r in load_dataset(name, format="choice", seed=3)]
    other = load_dataset(name, format="choice", seed=4)
    assert first == again
    same = [Record.from_dict(json.loads(line)) for line in first]
    assert [r.id for r in same] == [r.id for r in other]  # the same questions ...
    assert any(a.split != b.split for a, b in zip(same, other, strict=True))  # ... split differently
    assert any(a.choices != b.choices for a, b in zip(same, other, strict=True))


def test_builtin_has_several_thousand_questions_of_both_formats() -> None:
    oe, choice = load_dataset("builtin", format="oe"), load_dataset("builtin", format="choice")
    assert len(oe) == len(choice) and len(oe) >= 6000
    assert {r.dataset for r in oe} == set(BUILTINS)
    assert {r.task for r in oe if r.dataset == "arithmetic"} == set(ARITHMETIC_TASKS)
    assert {r.task for r in oe if r.dataset == "countries"} == {
        "capital", "currency", "continent", "nationality", "internet_code", "highest_point",
    }  # fmt: skip
    assert {r.task for r in oe if r.dataset == "elements"} == {
        "symbol", "atomic_number", "name", "number_to_name", "period", "block", "group",
    }  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_builtin_holds_out_2000_graded_questions_and_trains_on_2000(seed: int) -> None:
    oe = load_dataset("builtin", format="oe", seed=seed)
    splits = [r.split for r in oe]
    assert splits.count("test") >= 2000 and splits.count("train") >= 2000
    facts = sum(r.dataset != "arithmetic" for r in oe)
    assert facts >= len(oe) / 3  # facts about the world, not mostly sums


def test_builtin_split_fractions_are_40_20_40_by_entity() -> None:
    assert SPLIT_FRACTIONS == (0.4, 0.2, 0.4)
    entities = {(r.dataset, r.entity): r.split for r in load_dataset("builtin", format="oe")}
    shares = [list(entities.values()).count(s) / len(entities) for s in ("train", "validation", "test")]
    assert all(abs(share - want) < 0.03 for share, want in zip(shares, SPLIT_FRACTIONS, strict=True))


def test_arithmetic_has_about_600_unique_equations_per_task_where_that_many_exist() -> None:
    for task in ARITHMETIC_TASKS:
        pairs = equations(task)
        assert len(set(pairs)) == len(pairs)
        assert len(pairs) == 81 if task in ("add-1d", "mul-1x1") else 500 <= len(pairs) <= 650


def test_subtractions_are_never_negative_and_their_entity_is_the_ordered_pair() -> None:
    records = [r for r in load_dataset("arithmetic") if r.task.startswith("sub-")]
    assert {r.task for r in records} == {"sub-2d", "sub-3d"}
    for r in records:
        a, op, b = r.question.removeprefix("What is ").removesuffix("?").split()
        assert op == "-" and int(a) >= int(b) and r.answer == str(int(a) - int(b))
        assert r.entity == f"{a} - {b}" and r.id == f"arithmetic/{r.task}/{a}-{b}"
        assert len(a) == len(b) == int(r.task[4])
    choice = [r for r in load_dataset("arithmetic", format="choice") if r.task.startswith("sub-")]
    assert any(r.answer == "0" for r in choice) and all(min(map(int, r.choices)) >= 0 for r in choice)


def test_arithmetic_commutative_duplicates_share_an_entity_and_a_split() -> None:
    for seed in (0, 1, 2):
        by_question = {r.question: r for r in load_dataset("arithmetic", seed=seed)}
        mirrored = 0
        for question, record in by_question.items():
            a, op, b = question.removeprefix("What is ").removesuffix("?").split()
            twin = by_question.get(f"What is {b} {op} {a}?")
            if twin is not None and a != b:
                mirrored += 1
                assert twin.entity == record.entity == f"{min(int(a), int(b))} {op} {max(int(a), int(b))}"
                assert twin.split == record.split
        assert mirrored > 50


def test_choice_distractors_are_distinct_from_gold_and_from_the_same_field() -> None:
    records = load_dataset("builtin", format="choice")
    golds: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        golds[r.dataset, r.task].add(r.answer)
    for r in records:
        assert len(r.choices) == 4
        assert len({c.casefold() for c in r.choices}) == 4
        right = {a.casefold() for a in (r.answer, *r.aliases)}
        distractors = [c for i, c in enumerate(r.choices) if i != r.answer_index]
        assert not {d.casefold() for d in distractors} & right
        if r.dataset == "arithmetic":
            gold = int(r.answer)
            assert all(int(d) >= 0 and int(d) != gold for d in distractors)
            assert sum(abs(int(d) - gold) in (1, 2, 10) for d in distractors) >= 2
        else:
            assert set(distractors) <= golds[r.dataset, r.task]


def test_gold_positions_are_spread_over_all_letters() -> None:
    positions = [r.answer_index for r in load_dataset("builtin", format="choice")]
    assert all(positions.count(i) > len(positions) / 6 for i in range(4))


def test_split_of_is_a_stable_hash_near_the_fractions() -> None:
    splits = [split_of("d", f"entity {i}", seed=0) for i in range(3000)]
    assert splits == [split_of("d", f"entity {i}", seed=0) for i in range(3000)]
    assert abs(splits.count("train") / 3000 - 0.6) < 0.03 and abs(splits.count("test") / 3000 - 0.2) < 0.03
    assert splits != [split_of("d", f"entity {i}", seed=1) for i in range(3000)]
    wide = [split_of("d", f"entity {i}", 0, (0.4, 0.2, 0.4)) for i in range(3000)]
    assert abs(wide.count("train") / 3000 - 0.4) < 0.03 and abs(wide.count("test") / 3000 - 0.4) < 0.03


def test_with_choices_skips_duplicates_and_other_right_answers() -> None:
    record = Record(id="q", dataset="d", split="train", question="Capital?", answer="La Paz", aliases=["Sucre"])
    choice = with_choices(record, ["sucre", "Lima", "LIMA", "la paz", "Quito", "Bogota"], rng_for(0, "q"))
    assert sorted(choice.choices) == ["Bogota", "La Paz", "Lima", "Quito"]
    assert choice.id == "q/choice" and choice.choices[choice.answer_index] == "La Paz"
    assert len(with_choices(record, ["Lima"], rng_for(1)).choices) == 2


# ----------------------------------------------------------------------------------------- Factbook cleaning


def by_code() -> dict[str, Any]:
    return {c.code: c for c in countries()}


def test_capitals_with_several_seats_keep_the_first_as_gold_and_the_others_as_aliases() -> None:
    c = by_code()
    assert c["sf"].capital == ("Pretoria", ("Cape Town", "Bloemfontein"))
    assert c["bl"].capital == ("La Paz", ("Sucre",))
    assert c["by"].capital[0] == "Gitega" and "Bujumbura" in c["by"].capital[1]
    assert c["iv"].capital[0] == "Yamoussoukro" and "Abidjan" in c["iv"].capital[1]
    assert c["nl"].capital == ("Amsterdam", ())  # The Hague is the seat of government, not the capital


def test_capital_cleaning_drops_notes_and_descriptions_and_keeps_other_names() -> None:
    c = by_code()
    assert c["ek"].capital == ("Malabo", ())  # "; note - Malabo is on the island of Bioko ..."
    assert c["fj"].capital == ("Suva", ())  # "(on Viti Levu)"
    assert c["sm"].capital == ("San Marino", ())  # "(city)"
    assert c["up"].capital == ("Kyiv", ("Kiev",))
    assert c["md"].capital == ("Chisinau", ("Kishinev",))  # "Chisinau in Romanian (Kishinev in Russian)"
    assert c["kv"].capital == ("Pristina", ("Prishtine", "Prishtina"))
    assert c["co"].capital == ("Bogotá", ("Bogota",))
    assert "St. John's" in c["ac"].capital[1]
    assert c["us"].capital[0] == "Washington, D.C."
    assert clean_capital("no official capital; government offices in the Yaren District") is None
    assert "nr" not in c and "ee" not in c  # Nauru has no capital; the EU is not a country


def test_every_factbook_answer_is_clean_text() -> None:
    for c in countries():
        answers = (c.capital, c.currency, c.nationality, c.internet_code, c.highest_point)
        for gold, aliases in (a for a in answers if a is not None):
            for text in (gold, *aliases):
                assert text == text.strip() and text
                assert not any(mark in text for mark in ("(", ")", ";", "&", "<", "note", "per US dollar"))


def test_currencies_are_singular_with_plural_code_and_alternative_aliases() -> None:
    c = by_code()
    assert c["fr"].currency == ("euro", ("euros", "EUR"))
    assert c["in"].currency == ("Indian rupee", ("Indian rupees", "INR"))
    gold, aliases = c["tv"].currency
    assert gold == "Tuvaluan dollar" and {"Tuvaluan dollars", "Australian dollar", "AUD"} <= set(aliases)
    gold, aliases = c["sg"].currency  # Senegal
    assert gold == "West African CFA franc" and {"CFA franc", "XOF"} <= set(aliases)
    assert c["cm"].currency[0] == "Central African CFA franc"
    assert c["lt"].currency[0] == "loti" and c["wz"].currency[0] == "lilangeni"
    assert c["us"].currency[0] == c["ec"].currency[0] == "US dollar"
    assert clean_currency("Aruban guilders/florins per US dollar -") == (
        "Aruban guilder",
        ("Aruban guilders", "Aruban florin", "Aruban florins"),
    )


def test_transcontinental_countries_accept_both_continents() -> None:
    c = by_code()
    assert set(c["rs"].continent[1]) == {"Europe"} and c["rs"].continent[0] == "Asia"
    assert c["eg"].continent == ("Africa", ("Asia",))
    assert c["pp"].continent[0] == "Oceania" and "Australia" in c["pp"].continent[1]
    assert c["fr"].continent == ("Europe", ())


def test_nationality_adjectives_with_other_forms_and_nouns_as_aliases() -> None:
    c = by_code()
    assert c["ke"].nationality == ("Kenyan", ("Kenyans",))  # adjective "Kenyan", noun "Kenyan(s)"
    assert c["fr"].nationality == ("French", ("Frenchman", "Frenchwoman", "Frenchmen", "Frenchwomen"))
    assert c["bb"].nationality == ("Barbadian", ("Bajan", "Barbadians"))  # "Barbadian or Bajan (colloquial)"
    assert c["ac"].nationality == ("Antiguan", ("Barbudan", "Antiguans", "Barbudans"))  # "Antiguan, Barbudan"
    assert c["tw"].nationality == ("Taiwanese", ())  # "Taiwan (or Taiwanese)": "Taiwan" repeats the name
    assert c["cf"].nationality == ("Congolese", ())  # "Congolese or Congo"
    assert c["sa"].nationality == ("Saudi Arabian", ("Saudis", "Saudi"))  # "Saudi" added: echo-safe
    assert c["sn"].nationality == ("Singaporean", ("Singaporeans",))  # adjective "Singapore": the noun serves
    assert c["gm"].nationality == ("German", ("Germans",))  # "German" is not "Germany"
    assert c["la"].nationality == ("Lao", ("Laotian", "Laotians"))  # noun "Lao(s)": "Laos" is the name
    assert c["wz"].nationality[0] == "Swati" and "Swazi" in c["wz"].nationality[1]
    assert c["ct"].nationality is None and c["dr"].nationality is None  # only the name itself
    assert c["vt"].nationality is None and c["tk"].nationality is None  # "none"
    assert clean_nationality("NA", "NA (US citizens)", "Northern Mariana Islands") is None


def test_internet_codes_take_the_first_code_and_skip_english_words() -> None:
    c = by_code()
    assert c["fr"].internet_code == (".fr", ("fr",))  # "metropolitan France - .fr; French Guiana - .gf; ..."
    assert c["uk"].internet_code == (".uk", ("uk",)) and c["gm"].internet_code == (".de", ("de",))
    assert clean_internet_code(".is") is None and c["it"].internet_code is None  # graded: "... is ..."
    records = [r for r in load_dataset("countries") if r.task == "internet_code"]
    assert len(records) > 200 and all(r.answer.startswith(".") and len(r.answer) == 3 for r in records)


def test_highest_points_are_named_peaks_with_short_names_as_aliases() -> None:
    c = by_code()
    assert c["ar"].highest_point == ("Cerro Aconcagua", ("Aconcagua",))
    assert c["np"].highest_point == c["ch"].highest_point == ("Mount Everest", ("Everest",))
    assert c["tz"].highest_point == ("Kilimanjaro", ())
    assert c["ke"].highest_point == ("Mount Kenya", ())  # no alias "Kenya": that is the question's name
    assert c["mi"].highest_point == ("Sapitwa", ("Mount Mlanje", "Mlanje"))
    assert c["gy"].highest_point == ("Laberintos del Norte", ("Mount Roraima", "Roraima"))
    assert c["us"].highest_point == ("Mount McKinley", ("McKinley", "Denali"))
    assert c["kz"].highest_point == ("Pik Khan-Tengri", ("Khan-Tengri",))  # "... 7,010 m<br>note - ..."
    for code in ("bf", "cj", "ga", "mv", "sa", "mn"):  # unnamed, "1 km SW of ...", a golf tee, a range, a road
        assert c[code].highest_point is None
    assert clean_highest_point("xx", "unnamed elevation 675 m; located 2.5 km southeast of ...", "X") is None


# ----------------------------------------------------------------------------------------- elements


def elements_by(task: str) -> dict[str, Record]:
    return {r.entity: r for r in load_dataset("elements") if r.task == task}


def test_element_places_in_the_periodic_table() -> None:
    period, block, group = elements_by("period"), elements_by("block"), elements_by("group")
    assert period["Iron"].answer == "4" and block["Iron"].answer == "d" and group["Iron"].answer == "8"
    assert block["Iron"].aliases == ["d-block"] and period["Iron"].question.endswith("is iron?")
    assert (period["Hydrogen"].answer, block["Hydrogen"].answer, group["Hydrogen"].answer) == ("1", "s", "1")
    assert period["Oganesson"].answer == "7" and block["Cerium"].answer == "f" and "Cerium" not in group
    for disputed in ("Lanthanum", "Actinium", "Lutetium", "Lawrencium"):
        assert disputed not in block and disputed not in group and disputed in period
    assert len(period) == 118 and len(block) == 114 and len(group) == 88


def test_element_names_from_atomic_numbers() -> None:
    by_number = {r.question: r for r in elements_by("number_to_name").values()}
    gold = by_number["Which chemical element has atomic number 79?"]
    assert gold.answer == "Gold" and gold.id == "elements/number_to_name/gold"
    assert by_number["Which chemical element has atomic number 26?"].answer == "Iron"
    assert by_number["Which chemical element has atomic number 13?"].aliases == ["Aluminium"]


# ----------------------------------------------------------------------------------------- local files


@pytest.mark.skipif(not MMLU_DIR.exists(), reason="the shared MMLU subset is not on this machine")
def test_mmlu_csv_reads_the_shared_subset() -> None:
    test = load_dataset(f"mmlu-csv:{MMLU_DIR}", split="test", format="choice")
    dev = load_dataset(f"mmlu-csv:{MMLU_DIR}", split="dev")
    assert len(test) == 2030 and len(dev) == 30
    assert {r.meta["subject_label"] for r in dev} >= {"Clinical knowledge", "High school geography"}
    assert all(r.choices[r.answer_index] == r.answer and len(r.choices) == 4 for r in test)
    assert SOURCES["mmlu-csv"].fewshot_split == "dev"


def test_mmlu_csv_takes_splits_from_file_names_and_matches_hub_ids(tmp_path: Path, fake_hub: Any) -> None:
    records = load_dataset(f"mmlu-csv:{mmlu_folder(tmp_path)}")
    assert {r.split: r.id for r in records} == {
        "dev": "mmlu/anatomy/dev/1",
        "validation": "mmlu/anatomy/validation/0",
        "test": "mmlu/anatomy/test/0",
    }
    assert records[1].question == 'A "quoted", multi\nline question' and records[1].answer == "w"
    assert {r.id for r in load_dataset("mmlu:anatomy")} >= {"mmlu/anatomy/dev/0", "mmlu/anatomy/test/1"}


def test_csv_choices_from_several_columns_and_answers_as_letter_index_or_text(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", "q,A,B,C,label,part\nOne?,x,y,z,b,train\nTwo?,x,y,z,2,test\nThree?,x,y,z,x,val\n")
    columns = {"question": "q", "choices": "A, B, C", "answer": "label", "split": "part"}
    choice = load_dataset(f"csv:{path}", format="choice", columns=columns)
    assert [(r.answer_index, r.answer, r.split) for r in choice] == [
        (1, "y", "train"),
        (2, "z", "test"),
        (0, "x", "validation"),
    ]
    oe = load_dataset(f"csv:{path}", columns=columns)
    assert [r.answer for r in oe] == ["y", "z", "x"] and oe[0].choices is None and oe[0].id == "q/1"


def test_saved_records_load_back_as_they_were(tmp_path: Path) -> None:
    records = load_dataset("elements", format="choice", limit=20)
    write_records(tmp_path / "saved.jsonl", records)
    assert load_dataset(f"jsonl:{tmp_path / 'saved.jsonl'}", format="choice") == records


def test_ct_keeps_prompt_verbatim_sanitizes_output_and_parses_choices(tmp_path: Path) -> None:
    path = write(tmp_path / "ct.csv", CT_HEADER + CT_OE + CT_CHOICE)
    (oe,) = load_dataset(f"ct:{path}")
    assert oe.prompt == "Question: What is the capital of France?\nAnswer:"
    assert (oe.answer, oe.output, oe.correct, oe.grader) == ("Paris", "Paris", True, "dataset")
    (choice,) = load_dataset(f"ct:{path}", format="choice")
    assert choice.choices == ["grass", "blood", "sky"] and choice.answer_index == 1 and choice.answer == "blood"
    assert choice.correct is False


ERROR_CASES = [  # (source, file name, content or None for no file, load options, what the message names)
    ("csv", "missing.csv", None, {}, ["not found", "missing.csv"]),
    ("csv", "e.csv", "", {}, ["empty file", "e.csv"]),
    ("jsonl", "e.jsonl", "\n\n", {}, ["empty file"]),
    ("csv", "h.csv", "question,answer\n", {}, ["h.csv", "no rows after the header"]),
    ("csv", "w.csv", "question,answer\na,b\nc,d,e\n", {}, ["w.csv:3", "expected 2 fields, got 3"]),
    ("csv", "q.csv", 'question,answer\n"a"b,c\n', {}, ["q.csv:2", "malformed CSV"]),
    (
        "csv",
        "m.csv",
        "q,a\nx,y\n",
        {"columns": {"question": "prompt", "answer": "a"}},
        ["'prompt'", "has: q, a"],
    ),
    ("csv", "n.csv", "q,a\nx,y\n", {}, ["no 'question' column", "the file has: q, a"]),
    ("csv", "eq.csv", "question,answer\n,y\n", {}, ["eq.csv:2", "column 'question'", "no question"]),
    ("jsonl", "ea.jsonl", '{"question": "x", "answer": "  "}\n', {}, ["ea.jsonl:1", "no answer"]),
    ("jsonl", "na.jsonl", '{"question": "x", "answer": null}\n', {}, ["column 'answer'", "None"]),
    ("jsonl", "nan.jsonl", '{"question": "x", "answer": NaN}\n', {}, ["column 'answer'", "nan"]),
    ("csv", "nan.csv", "question,answer\nNaN,y\n", {}, ["nan.csv:2", "column 'question'", "NaN"]),
    (
        "csv",
        "l.csv",
        'question,answer,choices\nx,E,"[""p"", ""q""]"\n',
        {"format": "choice"},
        ["l.csv:2", "'E' is outside"],
    ),
    ("csv", "c.csv", "question,answer\nx,y\n", {"format": "choice"}, ["c.csv:2", "needs choices"]),
    (
        "ct",
        "ct.csv",
        CT_HEADER + CT_CHOICE.replace(",b,", ",d,"),
        {"format": "choice"},
        ["ct.csv:2", "'d' is outside"],
    ),
    ("mmlu-csv", "x_test.csv", "q,a,b,c,d,F\r\n", {}, ["x_test.csv:1", "'F' is not one of A-D"]),
    ("mmlu-csv", "x_dev.csv", "q,a,b,c,A\r\n", {}, ["x_dev.csv:1", "expected 6 fields"]),
    ("mmlu-csv", "notes.txt", "hello", {}, ["no MMLU files"]),
]


@pytest.mark.parametrize(("source", "filename", "content", "options", "expected"), ERROR_CASES)
def test_file_problems_raise_one_line_data_errors_naming_them(
    source: str,
    filename: str,
    content: str | None,
    options: dict[str, Any],
    expected: list[str],
    tmp_path: Path,
) -> None:
    if content is not None:
        write(tmp_path / filename, content)
    with pytest.raises(DataError) as caught:
        load_dataset(f"{source}:{tmp_path if source == 'mmlu-csv' else tmp_path / filename}", **options)
    message = str(caught.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


# ----------------------------------------------------------------------------------------- hub sources


def test_hub_formatters_follow_each_dataset_schema(fake_hub: list[tuple[str, str | None, str]]) -> None:
    arc = load_dataset("arc_easy", format="choice", split="test")
    assert [(r.answer, r.answer_index) for r in arc] == [("oxygen", 1), ("6", 1)]  # answerKey "2" is a label
    (trivia,) = load_dataset("trivia_qa", split="validation")
    assert trivia.answer == "Mars" and trivia.aliases == ["Mars (planet)", "Planet Mars"]
    assert ("mandarjoshi/trivia_qa", "rc.nocontext", "test") not in fake_hub
    csqa = load_dataset("commonsense_qa", format="choice")
    assert len(csqa) == 2 and len(csqa[0].choices) == 5  # the unlabeled row is dropped
    sciq = load_dataset("sciq", format="choice", split="train")[0]
    assert sciq.choices[sciq.answer_index] == "mesophilic organisms" and len(sciq.choices) == 4
    mmlu = load_dataset("mmlu", split="validation")[2]
    assert (mmlu.task, mmlu.answer, mmlu.meta["subject_label"]) == (
        "high_school_us_history",
        "1",
        "High school us history",
    )


def test_hub_failures_say_network_or_cache_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'allenai/sciq' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match="could not load 'sciq' from the Hugging Face hub .*network access or a local cache"
    ):
        load_dataset("sciq")


# ----------------------------------------------------------------------------------------- load_dataset


def test_load_dataset_rejects_unknown_names_missing_splits_and_absent_formats() -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'; known: .*countries"):
        load_dataset("nope")
    with pytest.raises(DataError, match="no 'dev' split; it has test, train, validation"):
        load_dataset("elements", split="dev")
    with pytest.raises(DataError, match="'trivia_qa' has no 'choice' format"):
        load_dataset("trivia_qa", format="choice")
    with pytest.raises(DataError, match="needs an argument"):
        load_dataset("csv")


def test_resplit_cuts_a_test_only_set_into_train_validation_and_test_by_entity(tmp_path):
    if not SHARED_MMLU.exists():
        pytest.skip("the shared MMLU subjects are not beside this checkout")
    original = load_dataset(f"mmlu-csv:{SHARED_MMLU}", format="choice")
    resplit = load_dataset(f"resplit:mmlu-csv:{SHARED_MMLU}", format="choice")
    assert [r.id for r in resplit] == [r.id for r in original]  # the same questions, only their splits change
    counts = Counter(r.split for r in resplit)
    test_only = sum(r.split == "test" for r in original)
    assert counts["dev"] == sum(r.split == "dev" for r in original)  # the few-shot split stays
    assert abs(counts["train"] / test_only - 0.6) < 0.05 and abs(counts["validation"] / test_only - 0.2) < 0.05
    assert load_dataset(f"resplit:mmlu-csv:{SHARED_MMLU}", format="choice", split="validation") == [
        r for r in resplit if r.split == "validation"
    ]
    other_seed = load_dataset(f"resplit:mmlu-csv:{SHARED_MMLU}", format="choice", seed=1)
    assert [r.split for r in other_seed] != [r.split for r in resplit]
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("resplit:nope", format="choice")
