"""Benchmarks from the Hugging Face hub: MMLU, ARC, TriviaQA, SciQ and CommonsenseQA.

Each is a small formatter that turns one hub row into an open-ended record (gold = the correct option's
text) plus the options, and one shared loader that fetches the splits and makes the choice version.
``datasets`` is imported on first use: it takes a second or two, and most runs never touch the hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfknow.data.records import Record
from selfknow.data.registry import Request, register
from selfknow.data.splits import as_choice, rng_for, with_choices
from selfknow.errors import DataError

# (row, its index within the split, split, seed) -> the open-ended record and its choice version
# (None for open-ended-only datasets); None skips the row (an unlabeled one).
Made = tuple[Record, Record | None]
Formatter = Callable[[dict[str, Any], int, str, int], Made | None]


def _load(
    name: str, path: str, config: str | None, splits: tuple[str, ...], formatter: Formatter, request: Request
) -> list[Record]:
    import datasets as hf

    records = []
    for split in splits:
        try:
            rows = hf.load_dataset(path, config, split=split)
        except Exception as err:  # any hub, network or cache failure means the same to the user
            raise DataError(
                f"could not load '{name}' from the Hugging Face hub ({type(err).__name__}: {err}); "
                "it needs network access or a local cache"
            ) from None
        for index, row in enumerate(rows):
            made = formatter(row, index, split, request.seed)
            if made is not None:
                records.append(made[1] if request.format == "choice" and made[1] else made[0])
    return records


def _record(dataset: str, key: str, split: str, question: str, answer: str, **extra: Any) -> Record:
    record_id = f"{dataset}/{key}"
    return Record(
        id=record_id,
        dataset=dataset,
        split=split,
        question=question,
        answer=answer,
        entity=record_id,
        **extra,
    )


def _labeled(dataset: str, key: str, split: str, row: dict[str, Any]) -> Made:
    """ARC and CommonsenseQA keep options as {"label": [...], "text": [...]} and the gold as a label."""
    labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    gold = labels.index(row["answerKey"])
    record = _record(dataset, key, split, row["question"], texts[gold])
    return record, as_choice(record, texts, gold)


# ----------------------------------------------------------------------------------------- MMLU


def mmlu_row(row: dict[str, Any], counts: dict[tuple[str, str], int], split: str) -> Made:
    """Ids ``mmlu/<subject>/<split>/<n>`` count rows per subject, as the CSV source does, so they match."""
    subject = row["subject"]
    n = counts[subject, split] = counts.get((subject, split), -1) + 1
    choices, index = list(row["choices"]), int(row["answer"])
    meta = {"subject_label": " ".join(subject.split("_")).capitalize()}
    record = _record("mmlu", f"{subject}/{split}/{n}", split, row["question"], choices[index], task=subject, meta=meta)
    return record, as_choice(record, choices, index)


@register(
    "mmlu",
    kind="hub",
    description="MMLU (cais/mmlu), all 57 subjects or one: mmlu:anatomy",
    arg="SUBJECT",
    fewshot_split="dev",
)
def load_mmlu(request: Request) -> list[Record]:
    counts: dict[tuple[str, str], int] = {}
    return _load(
        "mmlu",
        "cais/mmlu",
        request.arg or "all",
        ("dev", "validation", "test"),
        lambda row, index, split, seed: mmlu_row(row, counts, split),
        request,
    )


# ----------------------------------------------------------------------------------------- ARC


def _arc(name: str, config: str) -> Callable[[Request], list[Record]]:
    """ARC labels its options A-E or, in a few hundred questions, 1-5; both are looked up as labels."""

    def load(request: Request) -> list[Record]:
        splits = ("train", "validation", "test")
        return _load(
            name,
            "allenai/ai2_arc",
            config,
            splits,
            lambda row, i, split, seed: _labeled(name, row["id"], split, row),
            request,
        )

    return load


register("arc_easy", kind="hub", description="AI2 Reasoning Challenge, easy set (allenai/ai2_arc)")(
    _arc("arc_easy", "ARC-Easy")
)
register("arc_challenge", kind="hub", description="AI2 Reasoning Challenge, challenge set (allenai/ai2_arc)")(
    _arc("arc_challenge", "ARC-Challenge")
)


# ----------------------------------------------------------------------------------------- TriviaQA


def trivia_qa_row(row: dict[str, Any], index: int, split: str, seed: int) -> Made:
    gold = row["answer"]["value"]
    aliases = [a for a in dict.fromkeys(row["answer"]["aliases"]) if a != gold]
    record = _record("trivia_qa", row["question_id"], split, row["question"], gold, aliases=aliases)
    return record, None


@register(
    "trivia_qa",
    kind="hub",
    description="TriviaQA without context (mandarjoshi/trivia_qa rc.nocontext); no test split (unanswered)",
    formats=("oe",),
)
def load_trivia_qa(request: Request) -> list[Record]:
    return _load("trivia_qa", "mandarjoshi/trivia_qa", "rc.nocontext", ("train", "validation"), trivia_qa_row, request)


# ----------------------------------------------------------------------------------------- SciQ


def sciq_row(row: dict[str, Any], index: int, split: str, seed: int) -> Made:
    """SciQ stores the right answer apart from three distractors: the options are shuffled per question."""
    record = _record("sciq", f"{split}/{index}", split, row["question"], row["correct_answer"])
    distractors = [row["distractor1"], row["distractor2"], row["distractor3"]]
    return record, with_choices(record, distractors, rng_for(seed, record.id))


@register("sciq", kind="hub", description="SciQ science exam questions (allenai/sciq)")
def load_sciq(request: Request) -> list[Record]:
    return _load("sciq", "allenai/sciq", None, ("train", "validation", "test"), sciq_row, request)


# ----------------------------------------------------------------------------------------- CommonsenseQA


def commonsense_qa_row(row: dict[str, Any], index: int, split: str, seed: int) -> Made | None:
    return _labeled("commonsense_qa", row["id"], split, row) if row["answerKey"] else None


@register(
    "commonsense_qa",
    kind="hub",
    description="CommonsenseQA, 5 options (tau/commonsense_qa); the unlabeled test split is left out",
)
def load_commonsense_qa(request: Request) -> list[Record]:
    return _load("commonsense_qa", "tau/commonsense_qa", None, ("train", "validation"), commonsense_qa_row, request)
