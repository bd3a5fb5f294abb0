"""Ask a trained Self-RAG run a question: the answer, whether it retrieved and why, the passages it read
with their critique scores, and the calibrated confidence of the closed-book answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selfknow.ask import Asker
from selfknow.errors import SelfknowError
from selfknow.rag.evaluation import best_candidate, candidate_score, retrieve_probability
from selfknow.rag.infer import self_rag
from selfknow.rag.run import RagRun

MODES = ("none", "always", "adaptive", "confidence")


@dataclass
class RagAnswer:
    question: str
    answer: str
    mode: str
    retrieved: bool
    reason: str
    confidence: float  # calibrated P(correct) of the base model's closed-book answer
    closed_book: str  # the base model's closed-book answer
    retrieve_probability: float  # p([Retrieval]) / (p([Retrieval]) + p([No Retrieval])) of the Self-RAG model
    passages: list[dict] = field(default_factory=list)  # title, id, candidate answer, critique scores


class RagAsker:
    def __init__(
        self,
        run_dir: str | Path,
        *,
        mode: str = "confidence",
        delta: float | None = None,
        tau: float | None = None,
        progress: bool = False,
    ):
        if mode not in MODES:
            raise SelfknowError(f"unknown retrieval mode '{mode}'; one of {', '.join(MODES)}")
        run = RagRun(run_dir, progress=progress)
        self.run, self.mode = run, mode
        self.delta = run.config.delta if delta is None else delta
        self.tau = run.config.tau if tau is None else tau
        self.model, self.tokenizer = run.generator()
        self.closed = Asker(run.dir / "calibration", run.config.confidence)

    def ask(self, question: str) -> RagAnswer:
        if not isinstance(question, str) or not question.strip():
            raise SelfknowError("ask needs a non-empty question")
        question = question.strip()
        index, config = self.run.search_index, self.run.config
        hits = index.search([question], config.k, config.method)[0]
        passages = [index.passages[row] for row, _ in hits]
        out = self_rag(self.model, self.tokenizer, [question], [passages], max_new_tokens=config.max_new_tokens)[0]
        base = self.closed.ask(question)[0]
        p_ret = retrieve_probability(out)
        if self.mode == "none":
            retrieve, reason = False, "mode none: never retrieves"
        elif self.mode == "always":
            retrieve, reason = True, "mode always: always retrieves"
        elif self.mode == "adaptive":
            retrieve = p_ret > self.delta
            reason = f"p([Retrieval]) = {p_ret:.2f} {'>' if retrieve else '≤'} δ = {self.delta}"
        else:
            retrieve = base.confidence < self.tau
            reason = f"P(closed-book answer correct) = {base.confidence:.2f} {'<' if retrieve else '≥'} τ = {self.tau}"
        if retrieve and not out["candidates"]:
            retrieve, reason = False, reason + "; but no passage matched the question, so it answers closed-book"
        by_id = {p.id: p for p in passages}
        keys = ("text", "relevance", "support", "utility", "issup")
        scored = [
            {
                "id": c["passage"],
                "title": by_id[c["passage"]].title,
                "score": candidate_score(c),
                **{k: c[k] for k in keys},
            }
            for c in out["candidates"]
        ]
        if retrieve:
            answer = best_candidate(out)["text"]
        elif self.mode == "confidence":
            answer = base.answer
        else:
            answer = out["closed_book"]["text"]
        return RagAnswer(
            question,
            answer,
            self.mode,
            retrieve,
            reason,
            base.confidence,
            base.answer,
            p_ret,
            scored if retrieve else [],
        )
