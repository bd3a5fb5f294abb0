"""The backtranslation data sources: FAQ pairs, doc segments, the segment filters, user files, the hub and splits."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
from pathlib import Path

import pytest

from selfknow.backtranslate import data
from selfknow.backtranslate.data import (
    Pair,
    Segment,
    debian_faq_pairs,
    debian_package_root,
    factbook_segments,
    filtered,
    hold_out,
    hub_pairs,
    python_doc_segments,
    python_faq_pairs,
    read_pairs,
    read_segments,
    segment_filter,
    user_pairs,
    user_segments,
    write_pairs,
    write_segments,
)
from selfknow.errors import DataError

SOURCES = Path("usr/share/doc/python3.11/html/_sources")
FAQ = """\
:tocdepth: 2

===============
Programming FAQ
===============

.. only:: html

   .. contents::

General Questions
=================

Is there a debugger?
--------------------

Yes.  The :func:`breakpoint` built-in and the :mod:`pdb module
<pdb>` help; see `pywin32 <https://github.com/mhammond/pywin32>`_, :pep:`8`,
:meth:`~list.sort` and ``python -m pdb``.

.. note::
   Use *care*.

This code::

   >>> x = 10

.. _why-this:

Why is *this* so?
-----------------

Because.

The details
^^^^^^^^^^^

More text.
"""


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_python_faq_question_sections_become_pairs_without_markup(tmp_path):
    _write(tmp_path / SOURCES / "faq/programming.rst.txt", FAQ)
    _write(tmp_path / SOURCES / "faq/index.rst.txt", "Is this a question?\n===================\n\nNo.\n")
    first, second = python_faq_pairs(tmp_path)
    assert (first.id, first.instruction, first.source) == (
        "python-faq/programming/0",
        "Is there a debugger?",
        "python-faq",
    )
    assert first.output == (
        "Yes.  The breakpoint() built-in and the pdb module help; see pywin32, PEP 8, sort() and python -m pdb.\n\n"
        "Note: Use care.\n\nThis code:\n\n   >>> x = 10"
    )
    assert (second.instruction, second.output) == ("Why is this so?", "Because.\n\nThe details\n\nMore text.")


def test_python_faq_drops_directives_and_keeps_code_indented(tmp_path):
    text = (
        "Q?\n==\n\n.. index:: single: x\n\n.. versionchanged:: 3.6 Now *fast*.\n\n.. code-block:: python\n\n   a = 1\n"
    )
    _write(tmp_path / SOURCES / "faq/design.rst.txt", text)
    (pair,) = python_faq_pairs(tmp_path)
    assert pair.output == "Changed in version 3.6: Now fast.\n\n    a = 1"


DEBIAN = """\
                      The Debian GNU/Linux FAQ

Table of Contents

1. Definitions and overview
    1.1. What is this FAQ?

---------------------------------------------------------------------

Chapter 1. Definitions and overview

1.1. What is this FAQ?

    This document answers questions^[1] about Debian (https://
    www.debian.org/) .

1.2. What is Debian GNU/Linux, and why
would I use it?

\xa0\xa0\xa0 Debian is a distribution.

      * free to use

8.1.1. dpkg

    The main tool.

---------------------------------------------------------------------

    ^[1] A footnote.
"""


def test_debian_faq_numbered_questions_become_pairs(tmp_path):
    _write(tmp_path / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz", gzip.compress(DEBIAN.encode()))
    first, second = debian_faq_pairs(tmp_path)
    assert (first.id, first.instruction, first.source) == ("debian-faq/1.1", "What is this FAQ?", "debian-faq")
    assert first.output == "This document answers questions about Debian (https://www.debian.org/)."
    assert (second.id, second.instruction) == ("debian-faq/1.2", "What is Debian GNU/Linux, and why would I use it?")
    assert second.output == "Debian is a distribution.\n\n  * free to use"


def _section(title: str, mark: str, body: str) -> str:
    return f"{title}\n{mark * len(title)}\n\n{body}\n\n"


def test_doc_segments_keep_subsections_that_fit_and_split_the_rest(tmp_path):
    long = " ".join(f"Sentence {i} of the long part." for i in range(60))  # about 1,800 characters
    doc = (
        _section("Title", "=", "Intro.")
        + _section("Part A", "-", "Text of A.")
        + _section("Sub A1", "~", "Text of A1.")
        + _section("Part B", "-", "Text of B.")
        + _section("Sub B1", "~", long)
        + _section("Sub B2", "~", long)
    )
    _write(tmp_path / SOURCES / "library/demo.rst.txt", doc)
    _write(tmp_path / SOURCES / "faq/general.rst.txt", _section("Why?", "=", "Because."))
    segments = python_doc_segments(tmp_path)
    assert [(s.id, s.title) for s in segments] == [
        ("python-docs/library/demo/0", "Title"),
        ("python-docs/library/demo/1", "Part A"),
        ("python-docs/library/demo/2", "Part B"),
        ("python-docs/library/demo/3", "Sub B1"),
        ("python-docs/library/demo/4", "Sub B2"),
    ]
    assert segments[1].text == "Text of A.\n\nSub A1\n\nText of A1."
    assert segments[0].text == "Intro." and segments[3].text == long


def test_factbook_segments_are_background_essays():
    segments = {s.id: s for s in factbook_segments()}
    assert len(segments) > 200
    france = segments["factbook/fr"]
    assert france.title == "France" and france.source == "factbook" and "<" not in france.text


def _prose(n: int = 20) -> str:
    return " ".join(f"Sentence number {i} talks about topic {7 * i} in some detail." for i in range(n))


def test_segment_filter_gives_each_reason():
    text = _prose()
    assert 600 <= len(text) <= 3000 and segment_filter("Fallback values", text) is None
    assert segment_filter("Fallback values", text[:500]) == "length"
    assert segment_filter("Fallback values", _prose(60)) == "length"
    assert segment_filter("  - ", text) == "header: empty"
    assert segment_filter("QUICK START", text) == "header: all capitals"
    for title in ("Advertisement", "Our forums", "Quick links", "Free Newsletter signup"):
        assert segment_filter(title, text) == "header: navigation"
    assert segment_filter("Fallback values", text + " Sentence number 3 talks about topic 21 in some detail.") == (
        "repetitive"
    )


def test_repetitive_means_trigram_jaccard_of_at_least_point_eight():
    def with_pair(words: int) -> str:  # two sentences that differ in their last word only
        stem = " ".join(f"w{i}" for i in range(words - 1))
        return f"{_prose()} {stem} alpha. {stem} omega."

    assert segment_filter("Title", with_pair(10)) is None  # 7 shared of 9 trigrams: 0.78
    assert segment_filter("Title", with_pair(12)) == "repetitive"  # 9 of 11: 0.82


def test_filtered_counts_reasons_and_drops_repeats():
    good = Segment("a/0", "Title", _prose(), "user")
    segments = [good, Segment("a/1", "Other", _prose(), "user"), Segment("a/2", "", _prose(), "user")]
    kept, dropped = filtered([*segments, Segment("a/3", "Short", "Too short.", "user")])
    assert kept == [good]
    assert dropped == {"duplicate": 1, "header: empty": 1, "length": 1}


def test_user_pairs_read_instruction_output_and_input(tmp_path):
    rows = [
        {"instruction": "Say hi.", "output": "Hi."},
        {"instruction": "Translate.", "input": "chat", "output": "cat"},
    ]
    path = _write(tmp_path / "mine.jsonl", "\n".join(map(json.dumps, rows)) + "\n\n")
    assert user_pairs(path) == [
        Pair("mine/1", "Say hi.", "Hi.", "user"),
        Pair("mine/2", "Translate.\n\nchat", "cat", "user"),
    ]


BAD_JSONL = {
    "empty": (b"  \n", "empty file"),
    "not utf-8": (b'{"instruction": "caf\xe9"}\n', ":1: not UTF-8"),
    "bad json": (b'{"instruction": "a", "output": "b", "text": "c"}\n{"instruction": \n', ":2: malformed JSON"),
    "missing field": (b'{"instruction": "a", "output": "b", "text": "c"}\n{"title": "t"}\n', ":2: missing field"),
}


@pytest.mark.parametrize("reader", [user_pairs, user_segments])
@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_bad_user_jsonl_is_a_one_line_error_naming_file_and_line(tmp_path, reader, case):
    content, message = BAD_JSONL[case]
    path = _write(tmp_path / "bad.jsonl", content)
    with pytest.raises(DataError, match=message) as err:
        reader(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_user_segments_from_a_folder_cut_markdown_at_headings(tmp_path):
    _write(tmp_path / "notes/plain.txt", "A whole file.\n")
    _write(
        tmp_path / "notes/sub/guide.md",
        "Preface.\n\n# Install\n\nRun it.\n\n## Linux\n\nUse apt.\n```\n# not a heading\n```\n",
    )
    assert user_segments(tmp_path / "notes") == [
        Segment("notes/plain/0", "plain", "A whole file.", "user"),
        Segment("notes/sub/guide/0", "guide", "Preface.", "user"),
        Segment("notes/sub/guide/1", "Install", "Run it.\n\nLinux\n\nUse apt.\n```\n# not a heading\n```", "user"),
    ]


def test_user_segments_from_jsonl_take_the_title_or_the_file_name(tmp_path):
    path = _write(tmp_path / "texts.jsonl", '{"text": "One.", "title": "First"}\n{"text": "Two."}\n')
    assert [(s.id, s.title, s.text) for s in user_segments(path)] == [
        ("texts/1", "First", "One."),
        ("texts/2", "texts", "Two."),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"), [("empty.txt", b"\n", "empty file"), ("x.md", b"\xff", "not UTF-8")]
)
def test_bad_user_text_file_names_the_file(tmp_path, name, content, message):
    _write(tmp_path / "notes/ok.txt", "Fine.")
    path = _write(tmp_path / "notes" / name, content)
    with pytest.raises(DataError, match=message) as err:
        user_segments(tmp_path / "notes")
    assert str(err.value).startswith(str(path))


def _fake_hub(monkeypatch, rows: list[dict]) -> list[tuple]:
    import datasets

    calls = []

    def load_dataset(name, split=None):
        calls.append((name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def _message(message_id, parent_id, role, text, lang="en", rank=None):
    return {"message_id": message_id, "parent_id": parent_id, "role": role, "lang": lang, "rank": rank, "text": text}


def test_oasst_gives_english_first_turns_with_the_best_reply(monkeypatch):
    calls = _fake_hub(
        monkeypatch,
        [
            _message("m1", None, "prompter", " What is 2+2? "),
            _message("m2", "m1", "assistant", "4.", rank=0),
            _message("m3", "m1", "assistant", "Five.", rank=1),
            _message("m4", "m2", "prompter", "Why?"),
            _message("m5", "m4", "assistant", "Arithmetic.", rank=0),
            _message("m6", None, "prompter", "Wie geht's?", lang="de"),
            _message("m7", "m6", "assistant", "Gut.", lang="de", rank=0),
            _message("m8", None, "prompter", "Unanswered?"),
        ],
    )
    pairs = hub_pairs("OpenAssistant/oasst1", split="validation")
    assert pairs == [Pair("OpenAssistant/oasst1/m1", "What is 2+2?", "4.", "hub:OpenAssistant/oasst1")]
    assert calls == [("OpenAssistant/oasst1", "validation")]


def test_hub_pairs_accept_prompt_response_and_name_missing_columns(monkeypatch):
    _fake_hub(monkeypatch, [{"prompt": "Hi?", "response": "Hello."}])
    assert hub_pairs("me/chat") == [Pair("me/chat/train/0", "Hi?", "Hello.", "hub:me/chat")]
    _fake_hub(monkeypatch, [{"instruction": "Hi?", "answer": "Hello."}])
    with pytest.raises(DataError, match="missing column.s. output .*it has instruction, answer"):
        hub_pairs("me/other")


def test_hub_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="could not load 'x/y'.*no network"):
        hub_pairs("x/y")


def _pairs(n: int) -> list[Pair]:
    return [Pair(f"p/{i}", f"Question {i}?", f"Answer {i}.", "user") for i in range(n)]


def test_hold_out_is_seeded_disjoint_and_order_free():
    pairs = _pairs(100)
    rest, held = hold_out(pairs, n=10, seed=3)
    assert len(held) == 10 and len(rest) == 90
    assert {p.id for p in rest}.isdisjoint(p.id for p in held) and set(rest) | set(held) == set(pairs)
    shuffled = random.Random(0).sample(pairs, len(pairs))
    assert {p.id for p in hold_out(shuffled, n=10, seed=3)[1]} == {p.id for p in held}
    assert {p.id for p in hold_out(pairs, n=10, seed=4)[1]} != {p.id for p in held}
    with pytest.raises(DataError, match="cannot hold out 100 of 100"):
        hold_out(pairs, n=100)


def test_pairs_and_segments_round_trip(tmp_path):
    pairs, segments = _pairs(3), [Segment("s/0", "T", "Text.", "user")]
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    write_segments(tmp_path / "segments.jsonl", segments)
    assert read_pairs(tmp_path / "pairs.jsonl") == pairs
    assert read_segments(tmp_path / "segments.jsonl") == segments
    with pytest.raises(DataError, match="missing field.s. id, source of a pair"):
        read_pairs(_write(tmp_path / "user.jsonl", '{"instruction": "a", "output": "b"}\n'))


MARKER = "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"


@pytest.fixture
def no_system_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_SYSTEM", tmp_path / "system")
    monkeypatch.setenv("SELFKNOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data.shutil, "which", lambda name: f"/usr/bin/{name}")
    return tmp_path / "cache/debian/debian-faq"


def test_installed_package_is_read_in_place(tmp_path, no_system_package):
    _write(tmp_path / "system" / MARKER, b"")
    assert debian_package_root("debian-faq") == tmp_path / "system"


def test_missing_package_is_downloaded_and_unpacked_into_the_cache(monkeypatch, no_system_package):
    commands = []

    def run(command, cwd, **kwargs):
        commands.append((command, cwd))
        if command[0] == "apt-get":
            _write(Path(cwd) / "debian-faq_11.1_all.deb", b"deb")
        else:
            _write(Path(cwd) / MARKER, b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(data.subprocess, "run", run)
    assert debian_package_root("debian-faq") == no_system_package
    assert commands == [
        (["apt-get", "download", "debian-faq"], no_system_package),
        (["dpkg-deb", "-x", "debian-faq_11.1_all.deb", "."], no_system_package),
    ]
    assert not list(no_system_package.glob("*.deb"))
    assert debian_package_root("debian-faq") == no_system_package and len(commands) == 2  # cached


def test_without_apt_get_the_error_says_how_to_install(monkeypatch, no_system_package):
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install python3.11-doc") as err:
        debian_package_root("python3.11-doc")
    assert "\n" not in str(err.value)


def test_a_failing_apt_get_is_one_line(monkeypatch, no_system_package):
    def run(command, cwd, **kwargs):
        return subprocess.CompletedProcess(
            command, 100, "", "Reading package lists...\nE: Unable to locate package x\n"
        )

    monkeypatch.setattr(data.subprocess, "run", run)
    with pytest.raises(DataError, match=r"failed \(E: Unable to locate package x\).*apt-get install debian-faq") as err:
        debian_package_root("debian-faq")
    assert "\n" not in str(err.value)


def _real_root(package: str) -> Path:
    marker = data._PACKAGE_FILES[package]
    root = next((r for r in (Path("/"), Path("/tmp/deb/x")) if (r / marker).exists()), None)
    if root is None:
        pytest.skip(f"the Debian package {package} is not installed or extracted under /tmp/deb/x")
    return root


@pytest.mark.slow
def test_real_packages_give_the_expected_counts():
    assert 150 <= len(python_faq_pairs(_real_root("python3.11-doc"))) <= 200
    assert 100 <= len(debian_faq_pairs(_real_root("debian-faq"))) <= 130
    kept, _ = filtered(python_doc_segments(_real_root("python3.11-doc")))
    assert len(kept) >= 1000
