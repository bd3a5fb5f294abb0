"""Short-form Self-RAG inference (spec §3.3), cached per question so every mode and every δ or τ is
computed afterwards from the same model outputs.

For each question the model is run three ways, once each:

- the bare prompt, one step: p([Retrieval]) and p([No Retrieval]) for the adaptive threshold;
- ``prompt + [No Retrieval]``: the closed-book answer;
- ``prompt + [Retrieval]<paragraph>{title}\\n{text}</paragraph>`` for each of the top-k passages, as one
  batch: a candidate per passage with its critique scores (IsRel, IsSup, IsUse, sequence log-prob).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from selfknow.data.journal import DICTS, Journal, dict_row
from selfknow.data.records import Record, iter_jsonl
from selfknow.grade import grade_record
from selfknow.progress import token_progress
from selfknow.rag.corpus import Passage
from selfknow.rag.critique import ReflectionIds, critique_candidate, strip_reflection
from selfknow.rag.generate import generate_candidates
from selfknow.rag.reflection import ISUSE_TOKENS, NO_RETRIEVAL, REFLECTION_TOKENS, RETRIEVAL, reflection_token_ids
from selfknow.rag.sequences import format_prompt, paragraph


def _graded(record: Record, text: str) -> bool:
    return bool(grade_record(replace(record, output=text, correct=None, grader=None)).correct)


def self_rag(
    model,
    tokenizer,
    questions: Sequence[str],
    passages: Sequence[Sequence[Passage]],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    count_tokens: Callable[[int], None] | None = None,
) -> list[dict]:
    """Self-RAG's outputs for each question: p([Retrieval]) and p([No Retrieval]) at the first step, the
    closed-book answer, and one critiqued candidate per passage (all passages of all questions in one
    length-sorted batch run). ``count_tokens`` hears of the tokens computed, as in
    :func:`~selfknow.rag.generate.generate_candidates`."""
    columns = reflection_token_ids(tokenizer, REFLECTION_TOKENS)
    ids = ReflectionIds.from_tokenizer(tokenizer)
    stop_ids = reflection_token_ids(tokenizer, ISUSE_TOKENS)
    prompts = [format_prompt(q) for q in questions]
    first = generate_candidates(
        model, tokenizer, prompts, [ids.retrieval, ids.no_retrieval], max_new_tokens=1, count_tokens=count_tokens
    )
    settings = {"stop_ids": stop_ids, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                "count_tokens": count_tokens}  # fmt: skip
    closed = generate_candidates(model, tokenizer, [p + NO_RETRIEVAL for p in prompts], columns, **settings)
    pairs = [(i, p) for i, found in enumerate(passages) for p in found]
    with_passage = [prompts[i] + RETRIEVAL + paragraph(p) for i, p in pairs]
    candidates = generate_candidates(model, tokenizer, with_passage, columns, **settings)
    out = [
        {
            "p_retrieval": float(step.reflection[0][0]),
            "p_no_retrieval": float(step.reflection[0][1]),
            "closed_book": {"text": strip_reflection(tokenizer.decode(book.tokens))},
            "candidates": [],
        }
        for step, book in zip(first, closed, strict=True)
    ]
    for (i, passage), candidate in zip(pairs, candidates, strict=True):
        raw = tokenizer.decode(candidate.tokens)
        critique = critique_candidate(candidate, columns, ids)
        out[i]["candidates"].append(
            {"passage": passage.id, "text": strip_reflection(raw), "raw": raw, **critique.to_dict()}
        )
    return out


def answer_questions(
    model,
    tokenizer,
    records: Sequence[Record],
    retrieved: dict[str, list[Passage]],
    out: Path,
    *,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    progress: bool = False,
) -> None:
    """Write one JSON line per question to ``out``: :func:`self_rag`'s outputs with every answer graded
    against the question's golds. Lines are journaled as they are made, so a killed run resumes; ``out``
    appears, whole, when every question is answered."""
    journal = Journal(out, rows=DICTS)
    done = journal.done()
    todo = [r for r in records if r.id not in done]
    block_size = max(1, batch_size // 2)
    with token_progress(len(todo), "Self-RAG answers", progress) as bar:
        for start in range(0, len(todo), block_size):
            block = todo[start : start + block_size]
            outputs = self_rag(
                model, tokenizer, [r.question for r in block], [retrieved[r.id] for r in block],
                max_new_tokens=max_new_tokens, batch_size=batch_size, count_tokens=lambda n: bar.advance(0, n),
            )  # fmt: skip
            for record, line in zip(block, outputs, strict=True):
                line["closed_book"]["correct"] = _graded(record, line["closed_book"]["text"])
                for candidate in line["candidates"]:
                    candidate["correct"] = _graded(record, candidate["text"])
            journal.append({"id": r.id, "task": r.task, **line} for r, line in zip(block, outputs, strict=True))
            bar.advance(len(block), 0)
    journal.finish([r.id for r in records])


def read_results(path: Path) -> list[dict]:
    return [dict_row(obj, f"{path}:{number}") for number, obj in iter_jsonl(path)]
