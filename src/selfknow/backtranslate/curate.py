"""Self-curation (spec §3 step 4, §4): a forward model rates each candidate pair on the paper's 5-point rubric,
read two ways from one prefill:

- **parsed**: the model's own reply (greedy) ends with ``Score: n``, n in 1-5; anything else is no score
  (a 7B reproduction found most free-text ratings unparsable, spec §8.1);
- **expected**: after the reply is forced to open with ``Score:``, the next-token probabilities p_k of the
  digits 1-5 give E[score] = Σ k·p_k / Σ p_k (always defined; ``digit_mass`` = Σ p_k says how much of the
  model's belief the digits hold).

The rubric, about 450 tokens shared by every pair, is computed once and its key/value cache reused for all
pairs (the answering engine's shared-prefix batching). The curated subsets follow the paper: A_5 is a
parsed 5 or an expected score of at least 4.5 (the paper's "score ≥ 4.5"); A_4 is ≥ 4 or ≥ 3.5. A small
model's expected scores are compressed (the embedded model's span about 2.3-3.7), so the ``rank`` reading
keeps the same share of candidates as the paper's A_k held of its pool (A_5: 41,821 of 502,133 = 8.3%;
A_4: 195,043 = 38.8%), the best by expected score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfknow.answer import answer_once
from selfknow.backtranslate.prompts import SCORE_CUE, parse_score, rating_parts
from selfknow.data.records import Record, read_rows, write_rows
from selfknow.engine import AnswerConfig, AnswerStats
from selfknow.errors import DataError, ModelError
from selfknow.prompts import continuation_token

DIGITS = "12345"
THRESHOLDS = {"parsed": {5: 5.0, 4: 4.0}, "expected": {5: 4.5, 4: 3.5}}
PAPER_SHARE = {5: 41_821 / 502_133, 4: 195_043 / 502_133}  # A_k^(2) of the paper's candidates (Table 2)
READINGS = (*THRESHOLDS, "rank")


@dataclass(frozen=True)
class Rating:
    id: str
    parsed: int | None
    expected: float
    digit_mass: float
    reply: str


def expected_score(digit_logprobs: Sequence[float]) -> tuple[float, float]:
    """(E[score], Σ p_k) from the log-probs of the digits 1-5; a NaN or a zero mass is a DataError."""
    if len(digit_logprobs) != len(DIGITS):
        raise DataError(f"expected {len(DIGITS)} digit log-probs, got {len(digit_logprobs)}")
    probs = [math.exp(x) for x in digit_logprobs]
    mass = sum(probs)
    if not mass > 0 or any(math.isnan(p) for p in probs):
        raise DataError(f"digit log-probs {list(digit_logprobs)} give no usable distribution over 1-5")
    return sum((k + 1) * p for k, p in enumerate(probs)) / mass, mass


def score_cue(tokenizer, prompt: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The cue's token ids after the prompt and the digit tokens that follow it: ``Score:`` then " 4" where the
    tokenizer has spaced digits, else ``Score: `` then "4" (SmolLM2 writes a space and a digit as two tokens)."""
    for cue in (SCORE_CUE, SCORE_CUE + " "):
        try:
            digits = tuple(continuation_token(tokenizer, prompt + cue, d) for d in DIGITS)
        except ModelError:
            continue
        return tuple(tokenizer(cue, add_special_tokens=False).input_ids), digits
    raise ModelError("this tokenizer writes the digits 1-5 after 'Score:' as more than one token")


def rate(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str, str]],
    journal: str | Path,
    *,
    max_new_tokens: int = 64,
    prompt: str = "paper",
    progress: bool = True,
) -> tuple[list[Rating], AnswerStats]:
    """Rate (id, instruction, output) pairs with the rating prompt named ``prompt``; ``journal`` is the
    resumable answer file of this rating pass."""
    if not pairs:
        raise DataError("no pairs to rate")
    records = []
    for pair_id, instruction, output in pairs:
        head, rest = rating_parts(tokenizer, instruction, output, prompt)
        records.append(Record(id=pair_id, dataset="backtranslate", split="rate", question=pair_id, answer=output,
                              prompt=head + rest))  # fmt: skip
    cue, digits = score_cue(tokenizer, records[0].prompt or "")
    config = AnswerConfig(max_new_tokens=max_new_tokens, stop=(), cue=cue, cue_read=digits, batch_size=16)
    answered, stats = answer_once(model, tokenizer, records, config=config, output=journal, progress=progress)
    return [rating_of(r.id, r.output, r.scores["cue_logprobs"]) for r in answered], stats


def rating_of(pair_id: str, reply: str | None, cue_logprobs: Sequence[float]) -> Rating:
    """A pair's rating from its reply and the digit log-probs read after the cue (a record or a journal row)."""
    expected, mass = expected_score(cue_logprobs)
    return Rating(pair_id, parse_score(reply or ""), expected, mass, reply or "")


def curated_ids(ratings: Sequence[Rating], reading: str, k: int) -> list[str]:
    """The ids in A_k under ``reading`` ("parsed", "expected" or "rank"), in the ratings' order."""
    if reading not in READINGS or k not in PAPER_SHARE:
        raise DataError(f"curation reading must be one of {', '.join(READINGS)} and k 4 or 5, got {reading!r}, {k}")
    if reading == "rank":
        size = max(1, round(PAPER_SHARE[k] * len(ratings)))  # a pool too small for the share keeps its best
        best = sorted(ratings, key=lambda r: (-r.expected, r.id))[:size]
        keep = {r.id for r in best}
        return [r.id for r in ratings if r.id in keep]
    cut = THRESHOLDS[reading][k]
    value = (lambda r: r.parsed) if reading == "parsed" else (lambda r: r.expected)
    return [r.id for r in ratings if value(r) is not None and value(r) >= cut]


def write_ratings(path: str | Path, ratings: Sequence[Rating]) -> None:
    write_rows(path, ratings)


def read_ratings(path: str | Path) -> list[Rating]:
    return read_rows(path, Rating, "rating")
