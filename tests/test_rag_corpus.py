"""The Self-RAG corpus (packaged text and user files cut into passages) and retrieval over it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from selfknow.errors import DataError
from selfknow.rag import retrieval
from selfknow.rag.corpus import (
    Passage,
    build_corpus,
    chunk,
    factbook_passages,
    mendeleev_passages,
    read_passages,
    user_passages,
    write_passages,
)
from selfknow.rag.retrieval import Index, recall_at_k

TOY = [
    Passage("toy/0", "France", "The capital of France is Paris.", "user"),
    Passage("toy/1", "Colombia", "The capital of Colombia is Bogotá, high in the Andes.", "user"),
    Passage("toy/2", "Biology", "A zygote forms when two gametes fuse.", "user"),
    Passage("toy/3", "Rhetoric", "A comparison of the capital cities of Europe.", "user"),
]


def test_chunk_keeps_every_word_in_passages_within_the_limit_under_one_title():
    long_sentence = " ".join(f"w{i}" for i in range(180)) + "."
    text = f"Short one. {long_sentence} Another short sentence here.\n\nA new paragraph"
    passages = chunk("Title", text, "user", "doc", words=75)
    assert [p.id for p in passages] == [f"doc/{i}" for i in range(len(passages))]
    assert all(p.title == "Title" and p.source == "user" for p in passages)
    assert all(len(p.text.split()) <= 75 for p in passages)
    assert " ".join(p.text for p in passages).split() == text.split()


def test_chunk_cuts_at_sentence_ends_when_whole_sentences_fit():
    sentence = " ".join(["word"] * 29) + " end."
    passages = chunk("T", " ".join([sentence] * 5), "user", "doc", words=75)
    assert [len(p.text.split()) for p in passages] == [60, 60, 30]
    assert all(p.text.endswith("end.") for p in passages)


def test_factbook_passages_state_the_capital_in_the_factbooks_own_words():
    passages = factbook_passages()
    france = [p for p in passages if p.id.startswith("factbook/fr/")]
    assert {p.title for p in france} == {"France"}
    assert "The capital of France is Paris." in france[0].text
    assert any("France today is one of the most modern countries" in p.text for p in france)
    bolivia = next(p for p in passages if p.id == "factbook/bl/0")
    assert "The capital of Bolivia is La Paz (administrative capital); Sucre" in bolivia.text
    assert len({p.id for p in passages}) == len(passages)


def test_mendeleev_passages_give_iron_its_symbol_and_atomic_number():
    iron = [p for p in mendeleev_passages() if p.title == "Iron"]
    assert iron[0].id == "mendeleev/iron/0"
    assert iron[0].text.startswith("Iron (symbol Fe) is the chemical element with atomic number 26.")
    assert any("ferrum" in p.text for p in iron)


def test_user_folder_titles_files_by_markdown_heading_or_file_name(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "intro.md").write_text("# Getting started\n\nInstall the package first.", encoding="utf-8")
    (folder / "sub" / "faq.txt").write_text("Questions and answers.", encoding="utf-8")
    (folder / "ignored.csv").write_text("a,b", encoding="utf-8")
    passages = user_passages(folder)
    assert [(p.id, p.title, p.source) for p in passages] == [
        ("notes/intro/0", "Getting started", "user"),
        ("notes/sub/faq/0", "faq", "user"),
    ]


def test_user_jsonl_gives_a_document_per_line_titled_by_its_title_field(tmp_path):
    path = tmp_path / "faq.jsonl"
    lines = [json.dumps({"title": "Café", "text": "Open from nine."}), "", json.dumps({"text": "No title here."})]
    path.write_text("\n".join(lines), encoding="utf-8")
    passages = user_passages(path)
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("faq/1/0", "Café", "Open from nine."),
        ("faq/3/0", "faq", "No title here."),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"  \n", "empty.txt: empty file"),
        ("latin1.txt", "Bogotá".encode("latin-1"), "latin1.txt:1: not UTF-8"),
        ("latin1.jsonl", b'{"text": "ok"}\n{"text": "Bogot\xe1"}\n', "latin1.jsonl:2: not UTF-8"),
        ("notext.jsonl", b'{"text": "ok"}\n{"title": "only a title"}\n', "notext.jsonl:2: needs a non-empty 'text'"),
        ("broken.jsonl", b'{"text": "ok"}\n{"text": \n', "broken.jsonl:2: malformed JSON"),
        ("empty.jsonl", b"", "empty.jsonl: empty file"),
    ],
)
def test_bad_user_files_raise_data_error_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    source = tmp_path / name if name.endswith(".jsonl") else tmp_path
    with pytest.raises(DataError, match=re.escape(message)):
        user_passages(source)


def test_missing_paths_and_folders_without_text_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        build_corpus([str(tmp_path / "nowhere")])
    with pytest.raises(DataError, match="no .txt or .md files"):
        user_passages(tmp_path)


def test_build_corpus_refuses_two_sources_with_the_same_passage_ids(tmp_path):
    (tmp_path / "a.txt").write_text("Some text.", encoding="utf-8")
    with pytest.raises(DataError, match="two sources give passage id"):
        build_corpus([str(tmp_path), str(tmp_path)])


def test_passages_round_trip_through_jsonl(tmp_path):
    write_passages(tmp_path / "p.jsonl", TOY)
    assert read_passages(tmp_path / "p.jsonl") == TOY
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "text": "no title"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_passages(tmp_path / "bad.jsonl")


def test_bm25_finds_rare_words_and_accentless_spellings_and_nothing_for_stopwords(tmp_path):
    index = Index.build(TOY, tmp_path, kinds=("bm25",))
    zygote, bogota, stopwords = index.search(["what is a zygote", "Bogota", "what is the"], k=2, method="bm25")
    assert zygote[0][0] == 2 and len(zygote) == 1
    assert bogota[0][0] == 1
    assert stopwords == []
    assert Index.load(tmp_path).search(["what is a zygote"], k=2, method="bm25") == [zygote]


def test_loading_a_folder_without_an_index_says_so(tmp_path):
    with pytest.raises(DataError, match="no index here"):
        Index.load(tmp_path)


def test_dense_search_on_a_bm25_only_index_says_to_rebuild(tmp_path):
    index = Index.build(TOY, tmp_path, kinds=("bm25",))
    for method in ("dense", "hybrid"):
        with pytest.raises(DataError, match="no dense retriever .* rebuild it with dense"):
            index.search(["capital"], k=1, method=method)


def fake_embed(texts):
    """Unit vectors that rank the toy passages 3, 2, 1, 0 for every query."""
    table = {f"{p.title}\n{p.text}": np.eye(4, dtype=np.float32)[i] * (i + 1) for i, p in enumerate(TOY)}
    rows = [table.get(t, np.array([1, 2, 3, 4], dtype=np.float32)) for t in texts]
    return np.stack([r / np.linalg.norm(r) for r in rows])


def test_hybrid_fuses_bm25_and_dense_ranks_by_reciprocal_rank(tmp_path, monkeypatch):
    monkeypatch.setattr(retrieval, "_embed", fake_embed)
    index = Index.build(TOY, tmp_path)
    (dense,) = index.search(["capital of France"], k=4, method="dense")
    (bm25,) = index.search(["capital of France"], k=4, method="bm25")
    assert [row for row, _ in dense] == [3, 2, 1, 0]
    assert [row for row, _ in bm25][0] == 0
    expected: dict[int, float] = {}
    for hits in (dense, bm25):
        for rank, (row, _) in enumerate(hits, start=1):
            expected[row] = expected.get(row, 0.0) + 1 / (60 + rank)
    (hybrid,) = index.search(["capital of France"], k=2, method="hybrid")
    assert hybrid == sorted(expected.items(), key=lambda hit: -hit[1])[:2]


@pytest.mark.slow
def test_dense_and_hybrid_results_survive_save_and_load(tmp_path):
    built = Index.build(TOY, tmp_path)
    queries = ["Which city is the French capital?", "How do embryos begin?"]
    loaded = Index.load(tmp_path)
    for method in ("dense", "hybrid"):
        assert loaded.search(queries, k=3, method=method) == built.search(queries, k=3, method=method)
    assert [hits[0][0] for hits in loaded.search(queries, k=1, method="dense")] == [0, 2]
    info = json.loads((tmp_path / "index.json").read_text())
    assert info["kinds"] == ["bm25", "dense"] and info["passages"] == 4 and "MiniLM" in info["encoder"]
    assert np.load(tmp_path / "embeddings.npy").dtype == np.float32


def test_recall_at_k_counts_questions_with_a_whole_word_gold_in_the_top_k(tmp_path):
    index = Index.build(TOY, tmp_path, kinds=("bm25",))
    questions = ["zygote gametes", "capital of Colombia", "capital cities comparison"]
    golds = [["zygote"], ["Bogota"], ["Paris"]]
    ranked = [[row for row, _ in hits] for hits in index.search(questions, k=2, method="bm25")]
    assert ranked[0][0] == 2 and ranked[1][0] == 1 and ranked[2][:2] == [3, 0]
    # top-1: zygote (row 2) and Bogotá (row 1) hit; row 3 says "comparison", which does not count as "Paris"
    assert recall_at_k(index, questions, golds, ks=(1, 2), method="bm25") == {1: 2 / 3, 2: 1.0}
