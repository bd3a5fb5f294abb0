from __future__ import annotations

import pytest

from selfknow.data.records import Record
from selfknow.errors import GradingError
from selfknow.grade import grade_record, grade_records, normalize, parse_letter
from selfknow.judge import Judge, judge_records
from tests.conftest import chat_endpoint


def oe(question: str, answer: str, output: str | None, aliases=()) -> Record:
    return Record(
        id="q", dataset="t", split="test", question=question, answer=answer, aliases=list(aliases), output=output
    )


def test_normalization_folds_case_accents_punctuation_and_articles():
    assert normalize("  The Bogotá, D.C.! ") == normalize("bogota d c")


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("Paris", True),
        ("The capital of France is Paris.", True),
        ("paris, of course", True),
        ("Parisian", False),
        ("Lyon", False),
        ("", False),
    ],
)
def test_alias_match_needs_whole_words(output, correct):
    assert grade_record(oe("What is the capital of France?", "Paris", output)).correct is correct


def test_alias_match_does_not_credit_an_echo_of_the_question():
    question = "What is the capital of Gibraltar?"
    assert grade_record(oe(question, "Gibraltar", "The capital of Gibraltar is")).correct is False
    assert grade_record(oe(question, "Gibraltar", "The capital of Gibraltar is Gibraltar.")).correct is True
    assert grade_record(oe("What is the capital of Mexico?", "Mexico City", "Mexico City")).correct is True


def test_aliases_count_as_gold():
    assert grade_record(oe("Capital of South Africa?", "Pretoria", "Cape Town", aliases=["Cape Town"])).correct


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("It is located on the North American continent.", True),
        ("North America", True),
        ("It lies in South America.", False),
        ("a European country", False),
        ("Americana", False),
    ],
)
def test_a_continent_named_by_its_adjective_counts(output, correct):
    assert grade_record(oe("On which continent is Canada?", "North America", output)).correct is correct


def test_the_nationality_adjective_is_not_a_continent():
    assert (
        grade_record(oe("What is the nationality adjective of Australia?", "Australian", "Oceanian")).correct is False
    )
    assert grade_record(oe("Which continent is Kenya on?", "Africa", "African")).correct is True


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("It is in the second period.", True),
        ("Period two", True),
        ("the 2nd period", True),
        ("the third period", False),
        ("second, then 3", False),  # digits win over words: the last number is 3
        ("secondary", False),
    ],
)
def test_a_number_spelled_in_words_or_as_an_ordinal_counts(output, correct):
    assert grade_record(oe("In which period of the periodic table is lithium?", "2", output)).correct is correct


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("Period one", True),
        ("It is in the first period, the one with hydrogen.", True),
        ("It is one of the noble gases.", False),
        ("The one in the top row.", False),
        ("No one has measured it.", False),
    ],
)
def test_one_as_a_pronoun_is_not_the_number_one(output, correct):
    assert grade_record(oe("In which period of the periodic table is helium?", "1", output)).correct is correct


def test_numbers_are_graded_on_the_last_number():
    question = "What is 211 + 943?"
    assert grade_record(oe(question, "1154", "211 + 943 = 1,154")).correct is True
    assert grade_record(oe(question, "1154", "211 + 943 = 1155")).correct is False
    assert grade_record(oe(question, "1154", "The answer is 211")).grader == "numeric"


@pytest.mark.parametrize(
    ("output", "letter"),
    [
        ("b", "b"),
        ("(b)", "b"),
        ("B) Berlin", "b"),
        ("The answer is (c).", "c"),
        ("Rome", "d"),
        ("zebra", None),
    ],
)
def test_choice_letters_are_parsed_from_outputs(output, letter):
    assert parse_letter(output, ["Paris", "Berlin", "Madrid", "Rome"]) == letter


def test_choice_grading_compares_letters():
    record = Record(
        id="q",
        dataset="t",
        split="test",
        question="Capital of France?",
        answer="Paris",
        format="choice",
        choices=["Berlin", "Paris"],
        answer_index=1,
        output="b",
    )
    graded = grade_records([record])[0]
    assert (graded.correct, graded.grader) == (True, "choice")


def test_unanswered_records_and_unknown_strategies_are_errors():
    with pytest.raises(GradingError, match="no output"):
        grade_record(oe("q?", "a", None))
    with pytest.raises(GradingError, match="unknown grading strategy"):
        grade_record(oe("q?", "a", "a"), "fuzzy")


def test_an_openai_compatible_judge_grades_and_is_named_in_the_grade(tmp_path):
    with chat_endpoint(lambda prompt: "Yes." if "submitted the answer: Paris" in prompt else "no") as (url, _):
        records = [oe("Capital of France?", "Paris", "Paris"), oe("Capital of France?", "Paris", "Lyon")]
        records[1].id = "q2"
        graded = judge_records(records, Judge("gpt-x", url=url), output=tmp_path / "graded.jsonl", progress=False)
    assert [r.correct for r in graded] == [True, False]
    assert {r.grader for r in graded} == {"judge:gpt-x"}


def test_a_local_model_can_judge(tiny_llama_dir):
    records = [oe("Capital of France?", "Paris", "Paris")]
    graded = judge_records(records, Judge(str(tiny_llama_dir)), progress=False)
    assert graded[0].grader == f"judge:{tiny_llama_dir}" and isinstance(graded[0].correct, bool)


def test_a_possessive_leaves_no_stray_letter_to_match_a_one_letter_gold():
    record = oe("In which block of the periodic table is sodium?", "s", "It's in the p-block.")
    assert grade_record(record).correct is False
    assert grade_record(oe("In which block is sodium?", "s", "The s-block.")).correct is True
