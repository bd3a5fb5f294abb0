"""Self-augmentation (spec §3, step 2): the backward model writes one candidate instruction per unlabelled
segment, by nucleus sampling (T 0.7, p 0.9) seeded per segment, so a resumed run writes what an
uninterrupted one would.

Generation goes through the answering engine (:func:`selfknow.answer.answer_records`): batches by length, the
prompt's shared opening computed once, each finished instruction journaled as it is made (a killed run
resumes where it stopped), and processes sharded under ``accelerate launch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfknow.answer import answer_once
from selfknow.backtranslate.data import Segment
from selfknow.backtranslate.prompts import backward_prompt
from selfknow.backtranslate.tuning import truncate
from selfknow.data.records import Record, read_rows, write_rows
from selfknow.engine import AnswerConfig, AnswerStats


@dataclass(frozen=True)
class Candidate:
    """A generated instruction x̂ for a segment y: one augmented pair."""

    id: str  # the segment's id
    instruction: str
    output: str
    source: str
    title: str = ""


def prompt_records(items: Sequence[tuple[str, str]], prompt_of, split: str) -> list[Record]:
    """(id, text) items as records whose prompt is ``prompt_of(text)``; the text is the record's answer."""
    return [
        Record(id=i, dataset="backtranslate", split=split, question=i, answer=t, prompt=prompt_of(t)) for i, t in items
    ]


def backward_records(tokenizer, items: Sequence[tuple[str, str]], max_response_tokens: int, split: str) -> list[Record]:
    """Records asking the backward model for the instruction of each (id, response) item."""
    return prompt_records(
        items,
        lambda text: backward_prompt(tokenizer, truncate(tokenizer, text, max_response_tokens)[0]),
        split,
    )


def augment(
    model,
    tokenizer,
    segments: Sequence[Segment],
    journal: str | Path,
    *,
    max_response_tokens: int,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[Candidate], AnswerStats]:
    """One sampled instruction per segment; ``journal`` is the resumable answer file this stage appends to."""
    records = backward_records(tokenizer, [(s.id, s.text) for s in segments], max_response_tokens, "pool")
    config = AnswerConfig(
        max_new_tokens=max_new_tokens, stop=(), temperature=temperature, top_p=top_p, seed=seed, batch_size=32
    )
    answered, stats = answer_once(model, tokenizer, records, config=config, output=journal, progress=progress)
    by_id = {s.id: s for s in segments}
    candidates = [
        Candidate(r.id, (r.output or "").strip(), by_id[r.id].text, by_id[r.id].source, by_id[r.id].title)
        for r in answered
    ]
    return candidates, stats


def write_candidates(path: str | Path, candidates: Sequence[Candidate]) -> None:
    write_rows(path, candidates)


def read_candidates(path: str | Path) -> list[Candidate]:
    return read_rows(path, Candidate, "augmented pair")
