"""Seeded fuzzing of the dataset readers: every malformed file is either read (a truncation can leave a
valid file) or refused with one line naming the file; nothing else escapes, through the API or the CLI.
Valid but awkward files (BOM, CRLF, quoted newlines, trailing blank lines) are read as their clean twins."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from selfknow.data import load_dataset
from selfknow.errors import DataError
from tests.conftest import make_records
from tests.test_cli import run_cli

CT_HEADER = "context,target,target_prompt,prompt,output,query_label\n"
VALID = {
    "csv": ("x.csv", 'question,answer,aliases\n"What is 2 + 2?",4,four\nCapital of France?,Paris,\n'),
    "jsonl": (
        "x.jsonl",
        '{"question": "What is 2 + 2?", "answer": "4", "id": "a"}\n'
        '{"question": "Capital of France?", "answer": "Paris", "aliases": ["paris"], "id": "b"}\n',
    ),
    "mmlu-csv": ("algebra_test.csv", '"What is 2 + 2?",3,4,5,6,B\n"Capital of France?",Paris,Rome,Oslo,Bern,A\n'),
    "ct": ("x.csv", CT_HEADER + '"What is 2 + 2?",4," Answer:",,4,1\n"Capital of France?",Paris," Answer:",,Rome,0\n'),
}
FORMATS = {"mmlu-csv": "choice"}
WRONG_VALUES = [5, 2.5, True, None, [], {}, [1, [2]], float("inf"), float("nan"), "x" * 200_001, "a\u0000b"]


def malformed(kind: str, seed: int = 0) -> list[tuple[str, bytes]]:
    """(label, bytes) of broken variants of the kind's valid file."""
    rng = random.Random(seed)
    name, text = VALID[kind]
    data = text.encode()
    cases = [(f"truncated at {k}", data[:k]) for k in range(len(data))]
    cases += [(f"random bytes {i}", rng.randbytes(rng.randrange(1, 200))) for i in range(8)]
    cases += [(f"{enc} text", (text.replace("France", "Fr\u00e4nce")).encode(enc)) for enc in ("latin-1", "utf-16")]
    cases += [
        ("a NUL inside", data.replace(b"France", b"Fra\x00nce")),
        ("an escape inside", data.replace(b"2 + 2", b"\x1b[2J")),
    ]
    cases += [("whitespace only", b" \n\n"), ("first line only", data.split(b"\n")[0] + b"\n")]
    if kind == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        cases.append(("duplicate ids", "\n".join(json.dumps({**r, "id": "a"}) for r in rows).encode()))
        for field in ("question", "answer", "aliases", "id", "split"):
            for value in WRONG_VALUES:
                row = json.dumps({**rows[0], field: value}, allow_nan=True)
                cases.append((f"{field}={str(value)[:12]!r}", (row + "\n" + json.dumps(rows[1])).encode()))
        cases.append(("not an object", b'["What?", "yes"]\n'))
    return cases


def read(path: Path, kind: str):
    spec = f"{kind}:{path.parent if kind == 'mmlu-csv' else path}"
    return load_dataset(spec, format=FORMATS.get(kind, "oe"))


@pytest.mark.parametrize("kind", list(VALID))
def test_every_malformed_file_is_read_or_refused_in_one_line_naming_it(tmp_path, kind):
    name, _ = VALID[kind]
    cases = malformed(kind)
    refused = 0
    for n, (label, data) in enumerate(cases):
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        path = folder / name
        path.write_bytes(data)
        try:
            records = read(path, kind)
        except DataError as err:
            refused += 1
            message = str(err)
            assert "\n" not in message and str(folder) in message, (label, message)
        else:  # read: every text that reaches a prompt is clean
            for record in records:
                for text in [record.question, record.answer, *(record.choices or [])]:
                    assert text.strip() and "\x00" not in text and "\x1b" not in text, (label, record)
    assert refused >= len(cases) // 2, (refused, len(cases))  # most truncations break the file


@pytest.mark.parametrize("kind", list(VALID))
def test_the_cli_gives_one_line_and_writes_nothing_for_broken_files(monkeypatch, capsys, tmp_path, kind):
    """Through `selfknow answer`: a file that parses reaches the model, here a missing one, so every case
    ends in one error line; which error tells whether the file was read."""
    name, _ = VALID[kind]
    cases = malformed(kind, seed=1)[::5]
    for n, (label, data) in enumerate(cases):
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        (folder / name).write_bytes(data)
        source = folder if kind == "mmlu-csv" else folder / name
        out = folder / "answers.jsonl"
        args = ["answer", f"{kind}:{source}", "--split", "all", "-o", str(out), "-m", str(folder / "no-model")]
        code, _, stderr = run_cli(monkeypatch, capsys, *args, "-f", FORMATS.get(kind, "oe"))
        assert code == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, (label, stderr)
        assert str(folder) in stderr and "Traceback" not in stderr, (label, stderr)
        assert not out.exists() and not list(folder.glob("answers.jsonl.partial*")), label


AWKWARD = {
    "a BOM": lambda text: "\ufeff" + text,
    "CRLF line ends": lambda text: text.replace("\n", "\r\n"),
    "trailing blank lines": lambda text: text + "\n\n  \n",
}


@pytest.mark.parametrize("kind", list(VALID))
@pytest.mark.parametrize("variant", list(AWKWARD))
def test_valid_but_awkward_files_read_like_their_clean_twins(tmp_path, kind, variant):
    name, text = VALID[kind]
    (tmp_path / "clean").mkdir()
    (tmp_path / "awkward").mkdir()
    (tmp_path / "clean" / name).write_text(text, newline="")
    (tmp_path / "awkward" / name).write_bytes(AWKWARD[variant](text).encode())
    clean, awkward = read(tmp_path / "clean" / name, kind), read(tmp_path / "awkward" / name, kind)
    assert [(r.question, r.answer, r.choices) for r in awkward] == [(r.question, r.answer, r.choices) for r in clean]


def test_a_quoted_newline_stays_inside_its_field(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('question,answer\n"Line one\r\nline two?",yes\n', newline="")
    (record,) = load_dataset(f"csv:{path}")
    assert record.question == "Line one\nline two?"


def test_a_damaged_saved_estimator_is_refused_in_one_line_naming_its_file(tmp_path):
    """Run files are read through the same layer: every truncation of a saved estimator, and other JSON in its
    place, is a SelfknowError naming the file, never a traceback from deep inside."""
    from selfknow.confidence.base import Estimator
    from selfknow.confidence.baselines import DatasetAccuracy
    from selfknow.errors import SelfknowError

    saved = tmp_path / "saved"
    graded = [dataclasses.replace(r, output="0", correct=i % 2 == 0) for i, r in enumerate(make_records(8))]
    DatasetAccuracy().fit(graded, graded, None).save(saved)
    whole = (saved / "estimator.json").read_bytes()
    assert Estimator.load(saved).name == "dataset-accuracy"
    broken = tmp_path / "broken"
    broken.mkdir()
    damaged = [whole[:cut] for cut in range(len(whole) - 1)] + [b"[1, 2]", b'{"estimator": 3}', b"\xff\xfe{}"]
    for data in damaged:
        (broken / "estimator.json").write_bytes(data)
        with pytest.raises(SelfknowError) as caught:
            Estimator.load(broken)
        assert str(broken) in str(caught.value) and "\n" not in str(caught.value), data
