"""How well each part of instruction backtranslation works, measured on the seed pairs held out before anything
was trained (spec §9.4 and the issue's report):

- **backward model**: its instruction for each held-out answer against the true one, beside the base model
  asked zero-shot with the same prompt and the answer's first sentence. ROUGE-L F1 (rouge-score, stemmed),
  corpus BLEU (sacreBLEU), MiniLM cosine similarity, and top-1 retrieval (is the true instruction the
  nearest of all held-out instructions to the generated one, by MiniLM cosine?);
- **curation**: a labelled set whose positives (20%) are held-out pairs and whose negatives are built from
  them in three kinds: shuffled (another pair's instruction), truncated (the answer cut to its first fifth)
  and boilerplate (a licence or navigation text as the answer). Precision and recall of A_5 under both
  readings, and AUROC of the expected score and of the parsed score (unparsable ranked lowest);
- **forward models**: base, seed only (M_0), seed + curated (M_T) and seed + uncurated, answering the
  held-out instructions; ROUGE-L and MiniLM similarity to the human answer, and a local judge (the base
  model) choosing between each model's answer and M_0's in both orders: a win needs both orders, a
  disagreement is a tie (its rate is the judge's self-inconsistency); ROUGE-L differences are paired (the
  same held-out pairs resampled for both models), curated minus uncurated among them;
- **data table**: valid parsed scores, score histograms, curated sizes, length statistics (chars).

Every mean has a 95% bootstrap interval over the held-out pairs.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from selfknow.answer import answer_once
from selfknow.backtranslate.augment import backward_records, prompt_records
from selfknow.backtranslate.curate import READINGS, Rating, curated_ids, rate
from selfknow.backtranslate.data import LICENCES, Pair
from selfknow.backtranslate.prompts import ASSISTANT_TAG, WEB_TAG, forward_prompt
from selfknow.backtranslate.report import write_backtranslate_report
from selfknow.data.records import Record
from selfknow.data.splits import rng_for
from selfknow.engine import AnswerConfig
from selfknow.metrics import bootstrap_interval, score_auroc
from selfknow.stages import save_evaluation

if TYPE_CHECKING:
    from selfknow.backtranslate.run import BacktranslateRun

PAPER_CURATION = {"M_0": (0.44, 0.09), "M_1": (0.52, 0.44), "GPT-4": (0.88, 0.92)}  # precision, recall (Table 7)
JUDGE_QUESTION = "Which response is the better answer to this instruction from a user?\n\n{instruction}"


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)])


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def _embed(texts: Sequence[str]) -> np.ndarray:
    from selfknow.confidence.baselines import embed_texts

    return embed_texts([t or " " for t in texts])


def _mean(values: np.ndarray, bootstrap: int, seed: int) -> dict[str, float]:
    low, high = bootstrap_interval(np.mean, values, n=bootstrap, seed=seed)
    return {"value": float(np.mean(values)), "low": low, "high": high}


def text_scores(predictions: Sequence[str], references: Sequence[str], bootstrap: int, seed: int) -> dict[str, Any]:
    """ROUGE-L, BLEU, MiniLM cosine and top-1 retrieval of each prediction's reference among all references."""
    a, b = _embed(predictions), _embed(references)
    similarity = a @ b.T
    cosine = np.diag(similarity)
    top1 = (similarity.argmax(axis=1) == np.arange(len(references))).astype(float)
    low, high = bootstrap_interval(
        lambda i: bleu([predictions[k] for k in i], [references[k] for k in i]),
        np.arange(len(predictions)), n=min(bootstrap, 200), seed=seed,
    )  # fmt: skip
    return {
        "rouge_l": _mean(rouge_l(predictions, references), bootstrap, seed),
        "bleu": {"value": bleu(predictions, references), "low": low, "high": high},
        "minilm_cosine": _mean(cosine, bootstrap, seed),
        "top1_retrieval": _mean(top1, bootstrap, seed),
    }


def first_sentence(text: str) -> str:
    """The answer's first sentence: the baseline a backward model must beat."""
    return re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0].strip()


def first_question(text: str) -> str:
    """The first sentence ending in "?" of a reply, else the reply: the zero-shot baseline without the preamble
    ("The most likely question ... is:") that an instruction-tuned model puts before its answer."""
    for sentence in re.split(r"(?<=[.!?:])\s+|\n", text):
        if sentence.strip().endswith("?"):
            return sentence.strip()
    return text.strip()


def labelled_pairs(
    held: Sequence[Pair], size: int, boilerplate: Sequence[str], seed: int
) -> list[tuple[str, str, str, bool, str]]:
    """(id, instruction, output, is_good, kind) rows: 20% held-out pairs, 80% negatives made from held-out
    pairs in equal thirds (shuffled, truncated, boilerplate)."""
    positives = min(len(held), size // 5)
    rng = rng_for(seed, "labelled")
    pairs = list(held)
    rng.shuffle(pairs)
    rows = [(f"good/{p.id}", p.instruction, p.output, True, "held-out pair") for p in pairs[:positives]]
    for n in range(4 * positives):
        kind = ("shuffled", "truncated", "boilerplate")[n % 3]
        pair = pairs[n % len(pairs)]
        if kind == "shuffled":
            output = pairs[(n % len(pairs) + 1 + n // len(pairs)) % len(pairs)].output
        elif kind == "truncated":
            words = pair.output.split()
            output = " ".join(words[: max(3, len(words) // 5)])
        else:
            output = boilerplate[n % len(boilerplate)]
        rows.append((f"{kind}/{n}/{pair.id}", pair.instruction, output, False, kind))
    return rows


def curation_controls(labelled: Sequence[tuple[str, str, str, bool, str]], bootstrap: int, seed: int) -> dict:
    """What scores with no model judgement reach on the same labelled set (AUROC): the answer's length, and the
    MiniLM cosine similarity of instruction and answer (a relevance check)."""
    labels = np.array([row[3] for row in labelled])
    similarity = np.sum(_embed([row[1] for row in labelled]) * _embed([row[2] for row in labelled]), axis=1)
    controls = {"answer length (characters)": np.array([len(row[2]) for row in labelled], dtype=float),
                "MiniLM similarity of instruction and answer": similarity}  # fmt: skip
    out = {}
    for name, score in controls.items():
        low, high = bootstrap_interval(score_auroc, score, labels, n=bootstrap, seed=seed)
        out[name] = {"value": score_auroc(score, labels), "low": low, "high": high}
    return out


def curation_scores(ratings, good: dict[str, bool], bootstrap: int, seed: int) -> dict[str, Any]:
    """Precision/recall of A_5 under every reading, AUROC of the expected and parsed scores, against the labels."""
    by_id = {r.id: r for r in ratings}
    ids = list(good)
    labels = np.array([good[i] for i in ids])
    expected = np.array([by_id[i].expected for i in ids])
    parsed = np.array([by_id[i].parsed if by_id[i].parsed is not None else 0 for i in ids], dtype=float)
    out: dict[str, Any] = {"pairs": len(ids), "positives": int(labels.sum())}
    for reading in READINGS:
        chosen = set(curated_ids([by_id[i] for i in ids], reading, 5))
        picked = np.array([i in chosen for i in ids])
        tp = int((picked & labels).sum())
        out[reading] = {
            "selected": int(picked.sum()),
            "precision": tp / picked.sum() if picked.sum() else float("nan"),
            "recall": tp / labels.sum() if labels.sum() else float("nan"),
        }
    for name, score in (("expected", expected), ("parsed", parsed)):
        low, high = bootstrap_interval(score_auroc, score, labels, n=bootstrap, seed=seed)
        out[name]["auroc"] = {"value": score_auroc(score, labels), "low": low, "high": high}
    out["valid parsed scores"] = float(np.mean([by_id[i].parsed is not None for i in ids]))
    return out


def _lengths(texts: Sequence[str]) -> dict[str, float]:
    sizes = np.array([len(t) for t in texts], dtype=float)
    return {
        "n": len(sizes),
        "mean": float(sizes.mean()) if len(sizes) else 0.0,
        "sd": float(sizes.std()) if len(sizes) else 0.0,
    }


def data_table(run: BacktranslateRun) -> dict[str, Any]:
    """Spec §9.4: valid scores, histograms, curated sizes and lengths of each data set."""
    seed, candidates = run.seed(), run.candidates()
    table: dict[str, Any] = {
        "seed": {"instruction": _lengths([p.instruction for p in seed]), "output": _lengths([p.output for p in seed])},
        "augmented": {
            "instruction": _lengths([c.instruction for c in candidates]),
            "output": _lengths([c.output for c in candidates]),
        },
    }
    previous = None
    for t in range(1, run.config.iterations + 1):
        ratings = run.ratings(t)
        curated = run.curated(t)
        table[f"iteration {t}"] = {
            "valid parsed scores": float(np.mean([r.parsed is not None for r in ratings])),
            "parsed histogram": dict(sorted(Counter(str(r.parsed) for r in ratings).items())),
            "expected histogram": dict(sorted(Counter(str(round(r.expected)) for r in ratings).items())),
            "mean digit mass": float(np.mean([r.digit_mass for r in ratings])),
            "A_5 (expected)": len(curated_ids(ratings, "expected", 5)),
            "A_4 (expected)": len(curated_ids(ratings, "expected", 4)),
            "A_5 (parsed)": len(curated_ids(ratings, "parsed", 5)),
            "A_4 (parsed)": len(curated_ids(ratings, "parsed", 4)),
            "A_5 (rank)": len(curated_ids(ratings, "rank", 5)),
            "curated (used)": {
                "instruction": _lengths([c.instruction for c in curated]),
                "output": _lengths([c.output for c in curated]),
            },
        }
        if previous is not None:
            table[f"iteration {t}"][f"agreement with iteration {t - 1}"] = _rating_agreement(previous, ratings)
        previous = ratings
    return table


def _rating_agreement(before: Sequence[Rating], after: Sequence[Rating]) -> dict[str, float]:
    """How much a retrained rater changed its verdicts: Pearson correlation of the expected scores over the
    same candidates, and how many of the top-ranked A_5 pairs the two raters share."""
    first = {r.id: r.expected for r in before}
    shared = [r for r in after if r.id in first]
    correlation = np.corrcoef([first[r.id] for r in shared], [r.expected for r in shared])[0, 1]
    top = set(curated_ids(before, "rank", 5)) & set(curated_ids(after, "rank", 5))
    return {"expected-score correlation": float(correlation), "A_5 (rank) pairs in common": len(top)}


def _generate(run: BacktranslateRun, adapter: str | None, records: list[Record], name: str, tokens: int) -> list[str]:
    """Greedy outputs of the base model, or of it with ``adapter`` on, journaled under answers/."""
    if adapter is None:
        model, tokenizer = run.base()
    else:
        model, tokenizer = run.with_adapter(adapter)
    answered, _ = answer_once(
        model, tokenizer, records, config=AnswerConfig(max_new_tokens=tokens, stop=(), batch_size=16),
        output=run.dir / "answers" / f"{name}.jsonl", progress=run.progress,
    )  # fmt: skip
    if adapter is not None:
        run._release(model)
    return [r.output or "" for r in answered]


def judge(run: BacktranslateRun, name: str, held: Sequence[Pair], ours: Sequence[str], reference: Sequence[str]):
    """Per held-out instruction: 1 if the judge prefers ``ours`` in both orders, 0 if ``reference`` in both,
    ½ if the orders disagree."""
    records = []
    for pair, a, b in zip(held, ours, reference, strict=True):
        question = JUDGE_QUESTION.format(instruction=pair.instruction)
        for order, choices in (("ab", [a, b]), ("ba", [b, a])):
            records.append(Record(id=f"{pair.id}/{order}", dataset="backtranslate", split="judge", question=question,
                                  answer=choices[0], format="choice", choices=[c or "(empty)" for c in choices],
                                  answer_index=0))  # fmt: skip
    model, tokenizer = run.base()
    answered, _ = answer_once(
        model, tokenizer, records, output=run.dir / "answers" / f"judge-{name}.jsonl", progress=run.progress
    )
    verdicts = {r.id: r.output for r in answered}
    out = []
    for pair in held:
        first = verdicts[f"{pair.id}/ab"] == "a"
        second = verdicts[f"{pair.id}/ba"] == "b"
        out.append(1.0 if first and second else 0.0 if not first and not second else 0.5)
    return np.array(out)


def evaluate_run(run: BacktranslateRun) -> dict[str, Any]:
    config = run.config
    held = run.heldout()
    _, tokenizer = run.base()
    b, s = config.bootstrap, config.seed
    truths = [p.instruction for p in held]
    items = [(p.id, p.output) for p in held]
    summary: dict[str, Any] = {"held-out pairs": len(held)}

    backward = backward_records(tokenizer, items, config.max_response_tokens, "heldout")
    written = {
        "backward model": _generate(run, "backward", backward, "eval-backward", config.instruction_tokens),
        "base model, zero-shot": _generate(run, None, backward, "eval-backward-base", config.instruction_tokens),
        "first sentence of the answer": [first_sentence(p.output) for p in held],
    }
    written["base model, zero-shot, its first question only"] = [
        first_question(text) for text in written["base model, zero-shot"]
    ]
    summary["backward"] = {name: text_scores(texts, truths, b, s) for name, texts in written.items()}
    summary["backward examples"] = [
        {"true": truths[i], **{name: texts[i] for name, texts in written.items()}} for i in range(min(5, len(held)))
    ]

    boilerplate = [text for text in LICENCES.values() if text]
    labelled = labelled_pairs(held, config.labelled, boilerplate, s)
    good = {row[0]: row[3] for row in labelled}
    summary["curation"] = {"kinds": dict(Counter(row[4] for row in labelled))}
    for t in range(config.iterations):
        model, tok = run.with_adapter(f"forward-{t}")
        ratings, _ = rate(
            model, tok, [(i, x, y) for i, x, y, _, _ in labelled], run.dir / "answers" / f"eval-rating-{t}.jsonl",
            max_new_tokens=config.rating_tokens, prompt=config.rating_prompt, progress=run.progress,
        )  # fmt: skip
        run._release(model)
        summary["curation"][f"M_{t}"] = curation_scores(ratings, good, b, s)
    summary["curation"]["controls (AUROC)"] = curation_controls(labelled, b, s)
    summary["curation"]["paper (precision, recall)"] = PAPER_CURATION

    final = f"forward-{config.iterations}"
    seed_only, curated, uncurated = "seed only (M_0)", f"seed + curated (M_{config.iterations})", "seed + uncurated"
    systems = {
        "base model": (None, ()),
        seed_only: ("forward-0", (ASSISTANT_TAG,)),
        curated: (final, (ASSISTANT_TAG, WEB_TAG)),
        uncurated: ("forward-uncurated", (ASSISTANT_TAG, WEB_TAG)),
    }
    references = [p.output for p in held]
    answers = {}
    for name, (adapter, tags) in systems.items():
        records = prompt_records([(p.id, p.instruction) for p in held],
                                 lambda x, tags=tags: forward_prompt(tokenizer, x, tags), "heldout")  # fmt: skip
        slug = adapter or "base"
        answers[name] = _generate(run, adapter, records, f"eval-answers-{slug}", config.answer_tokens)
    forward: dict[str, Any] = {}
    per_pair = {name: rouge_l(texts, references) for name, texts in answers.items()}
    for name, texts in answers.items():
        scores = text_scores(texts, references, b, s)
        forward[name] = {"rouge_l": scores["rouge_l"], "minilm_cosine": scores["minilm_cosine"]}
        if name != seed_only:
            forward[name]["rouge_l minus seed only"] = _mean(per_pair[name] - per_pair[seed_only], b, s)
            wins = judge(run, (systems[name][0] or "base"), held, texts, answers[seed_only])
            forward[name]["win rate vs seed only (judge)"] = _mean(wins, b, s)
            forward[name]["judge self-agreement"] = float(np.mean(wins != 0.5))
    control = text_scores(references[1:] + references[:1], references, b, s)  # a right-sounding answer, wrong question
    forward["control: another held-out pair's human answer"] = {k: control[k] for k in ("rouge_l", "minilm_cosine")}
    summary["forward"] = forward
    summary["curated minus uncurated (ROUGE-L, paired)"] = _mean(per_pair[curated] - per_pair[uncurated], b, s)
    summary["forward examples"] = [
        {"instruction": held[i].instruction, **{n: a[i] for n, a in answers.items()}} for i in range(min(3, len(held)))
    ]
    summary["data table"] = data_table(run)
    summary["config"] = dataclasses.asdict(config)
    save_evaluation(run.dir, summary, write_backtranslate_report)
    return summary
