"""Human-written data for instruction backtranslation: seed (instruction, output) pairs and unlabelled text segments,
each a candidate output for which the model will write the instruction.

Offline, the seed pairs are the Python and Debian FAQs and the segments the rest of the Python docs and the CIA
World Factbook's background essays (Debian packages are fetched with ``apt-get download`` when not installed).
Users bring JSONL pairs, text files, or a hub dataset such as OASST1, the paper's own seed. Segments follow the
paper (App. E): the text under a header with its lower-level subsections, 600-3,000 characters, low-quality ones
dropped by :func:`segment_filter`.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from selfknow.backtranslate.sections import (
    MAX_CHARS,
    full_text,
    markdown_headings,
    rst_tree,
    section_tree,
    split_section,
    walk,
)
from selfknow.data.records import iter_jsonl, read_rows, write_rows
from selfknow.data.splits import rng_for
from selfknow.errors import DataError
from selfknow.models import cache_dir
from selfknow.rag.corpus import factbook_entries, text_files
from selfknow.reading import read_text


@dataclass(frozen=True)
class Pair:
    id: str  # "python-faq/programming/12": source, document, position; stable across builds
    instruction: str
    output: str
    source: str  # "python-faq", "debian-faq", "user" or "hub:<dataset>"


@dataclass(frozen=True)
class Segment:
    id: str  # "python-docs/library/os/3", "factbook/fr"
    title: str  # the header the text follows
    text: str
    source: str  # "python-docs", "factbook" or "user"


MIN_CHARS = 600
LICENCES: dict[str, str] = {
    "python-docs": "Python 3.11 documentation. Copyright © 2001-2023 Python Software Foundation. All rights "
    "reserved. Licensed under the PSF License Agreement (https://docs.python.org/3.11/license.html); code examples "
    "are also under the Zero-Clause BSD license.",
    "debian-faq": "The Debian GNU/Linux FAQ. Copyright © 1996-2021 Software in the Public Interest\n\n"
    "Permission is granted to make and distribute verbatim copies of this document provided the copyright notice "
    "and this permission notice are preserved on all copies.\n\n"
    "Permission is granted to copy and distribute modified versions of this document under the conditions for "
    "verbatim copying, provided that the entire resulting derived work is distributed under the terms of a "
    "permission notice identical to this one.\n\n"
    "Permission is granted to copy and distribute translations of this document into another language, under the "
    "above conditions for modified versions, except that this permission notice may be included in translations "
    "approved by the Free Software Foundation instead of in the original English.",
    "factbook": "The World Factbook, Central Intelligence Agency: a work of the US government, in the public domain.",
}
LICENCES["python-faq"] = LICENCES["python-docs"]

_PY_SOURCES = "usr/share/doc/python3.11/html/_sources"
_DEBIAN_FAQ = "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
_PACKAGE_FILES = {"python3.11-doc": f"{_PY_SOURCES}/faq/programming.rst.txt", "debian-faq": _DEBIAN_FAQ}
_SYSTEM = Path("/")


def debian_package_root(package: str) -> Path:
    """The folder that ``package``'s files lie under: ``/`` when it is installed, else a cache folder that
    ``apt-get download`` and ``dpkg-deb -x`` fill once (13 MB for both packages)."""
    marker = _PACKAGE_FILES[package]
    if (_SYSTEM / marker).exists():
        return _SYSTEM
    folder = cache_dir() / "debian" / package
    if not (folder / marker).exists():
        hint = f"install it with `sudo apt-get install {package}`"
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise DataError(f"this needs the Debian package {package}, and apt-get is not available: {hint}")
        folder.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "download", package], folder, hint)
        debs = sorted(folder.glob(f"{package}_*.deb"))
        if not debs:
            raise DataError(f"`apt-get download {package}` left no .deb file in {folder}: {hint}")
        _run(["dpkg-deb", "-x", debs[-1].name, "."], folder, hint)
        debs[-1].unlink()
        if not (folder / marker).exists():
            raise DataError(f"the {package} package unpacked in {folder} has no {marker}: {hint}")
    return folder


def _run(command: list[str], folder: Path, hint: str) -> None:
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    except OSError as err:
        raise DataError(f"`{' '.join(command)}` could not run ({err}): {hint}") from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DataError(f"`{' '.join(command)}` failed ({last}): {hint}")


# offline sources -----------------------------------------------------------------------------------------------


def _is_question(title: str) -> bool:
    """A "?" that ends the title or a sentence in it ("What is Linux?!", "How do I delete a file? (And ...)"), not
    one inside a quotation ('"Why is Python Installed on my Computer?" FAQ')."""
    return re.search(r"\?(\W*$|\s)", title) is not None


def python_faq_pairs(root: Path) -> list[Pair]:
    """Every Python FAQ section whose title is a question, its text (with subsections) the answer."""
    pairs = []
    for path in sorted((root / _PY_SOURCES / "faq").glob("*.rst.txt")):
        name = path.name.removesuffix(".rst.txt")
        questions = [s for s in walk(rst_tree(path)) if _is_question(s.title)] if name != "index" else []
        pairs += [Pair(f"python-faq/{name}/{k}", s.title, full_text(s), "python-faq") for k, s in enumerate(questions)]
    return [pair for pair in pairs if pair.output]


_DEBIAN_HEADING = re.compile(r"(\d+(?:\.\d+)+)\.\s+(.*)")


def _debian_text(lines: list[str]) -> str:
    """An answer without its indent and footnote marks, each link once. Line breaks stay: the text rendering
    sets code at the same indent as prose, so unwrapping would run commands together."""
    text = textwrap.dedent("\n".join(line.rstrip() for line in lines)).strip("\n")
    text = re.sub(r"\^\[\d+\]", "", text)
    text = re.sub(r"\((https?://[^)]*)\)", lambda m: "(" + re.sub(r"\s+", "", m[1]) + ")", text)  # rejoin wraps
    text = re.sub(r"(\S+) \((\1)\)", r"\1", text)  # "https://x (https://x)"
    return re.sub(r"(https?://\S+|\)) ([.,;:])(?=\s|$)", r"\1\2", text)


def debian_faq_pairs(root: Path) -> list[Pair]:
    """The Debian FAQ's numbered question headings ("3.1.2. Will there be ...?") with their indented answers;
    headings wrap onto unindented lines, answers end at the next unindented line (heading, chapter, footnotes)."""
    lines = gzip.decompress((root / _DEBIAN_FAQ).read_bytes()).decode("utf-8").replace("\xa0", " ").split("\n")
    pairs, i = [], 0
    while i < len(lines):
        heading = _DEBIAN_HEADING.fullmatch(lines[i].rstrip())
        i += 1
        if not heading:
            continue
        title = heading[2]
        while i < len(lines) and lines[i].strip() and not lines[i][0].isspace():
            title += ("" if title.endswith("/") or lines[i].startswith("/") else " ") + lines[i].strip()
            i += 1
        start = i
        while i < len(lines) and (not lines[i].strip() or lines[i][0].isspace()):
            i += 1
        answer = _debian_text(lines[start:i])
        if _is_question(title) and answer:
            pairs.append(Pair(f"debian-faq/{heading[1]}", title, answer, "debian-faq"))
    return pairs


def python_doc_segments(root: Path) -> list[Segment]:
    """Segments of every Python docs page but the FAQ: a section with its subsections when the whole fits in 3,000
    characters, else its own text and its subsections cut the same way."""
    base = root / _PY_SOURCES
    segments = []
    for path in sorted(base.rglob("*.rst.txt")):
        name = path.relative_to(base).as_posix().removesuffix(".rst.txt")
        if not name.startswith("faq/"):
            pieces = [piece for section in rst_tree(path) for piece in split_section(section)]
            segments += [Segment(f"python-docs/{name}/{k}", *piece, "python-docs") for k, piece in enumerate(pieces)]
    return segments


def factbook_segments() -> list[Segment]:
    """The background essay of every named Factbook entry, titled by the entry's short name."""
    return [
        Segment(f"factbook/{e.code}", e.name, "\n\n".join(e.background), "factbook")
        for e in factbook_entries()
        if e.background
    ]


# filters -------------------------------------------------------------------------------------------------------

_NAVIGATION = re.compile(r"\b(?:advertisements?|forums?|quick links?|free newsletters?)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def _trigrams(sentence: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", sentence.lower())
    return set(zip(words, words[1:], words[2:], strict=False))


def _repetitive(text: str, threshold: float = 0.8) -> bool:
    grams = [g for g in map(_trigrams, _SENTENCE.split(text)) if g]
    return any(len(a & b) >= threshold * len(a | b) for i, a in enumerate(grams) for b in grams[i + 1 :])


def segment_filter(title: str, text: str) -> str | None:
    """Why a segment is dropped, or None to keep it (the paper's App. E heuristics).

    "length": the text is outside 600-3,000 characters. "header: empty" (no letter or digit), "header: all
    capitals", "header: navigation" (advertisement, forum, quick link, free newsletter): a header that marks
    page furniture rather than content. "repetitive": two sentences (split after . ! ? and at blank lines; those
    under three words ignored) whose sets of lower-cased word trigrams A, B have Jaccard similarity
    |A ∩ B| / |A ∪ B| >= 0.8, the mark of boilerplate.
    """
    if not MIN_CHARS <= len(text) <= MAX_CHARS:
        return "length"
    if not any(c.isalnum() for c in title):
        return "header: empty"
    if title.isupper():
        return "header: all capitals"
    if _NAVIGATION.search(title):
        return "header: navigation"
    return "repetitive" if _repetitive(text) else None


def filtered(segments: Iterable[Segment]) -> tuple[list[Segment], Counter[str]]:
    """The segments :func:`segment_filter` keeps, less repeats of an earlier text ("duplicate"), and how many
    each reason dropped."""
    kept, dropped, seen = [], Counter[str](), set()
    for segment in segments:
        reason = segment_filter(segment.title, segment.text) or ("duplicate" if segment.text in seen else None)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(segment)
            seen.add(segment.text)
    return kept, dropped


# user data -----------------------------------------------------------------------------------------------------


def _string(obj: dict[str, Any], name: str, where: str) -> str:
    if name not in obj:
        raise DataError(f"{where}: missing field '{name}'")
    value = obj[name]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field '{name}' must be a non-empty string, got {value!r:.40}")
    return value.strip()


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    read_text(path)  # an empty or non-UTF-8 file: a one-line error naming it
    return iter_jsonl(path)


def user_pairs(path: str | Path) -> list[Pair]:
    """Pairs from a JSONL file with ``instruction`` and ``output`` per line; an ``input`` (Alpaca's context) is
    appended to the instruction after a blank line. Ids: "{file name}/{line}"."""
    path = Path(path)
    pairs = []
    for number, obj in _jsonl(path):
        where = f"{path}:{number}"
        instruction, output = _string(obj, "instruction", where), _string(obj, "output", where)
        if obj.get("input"):
            instruction += "\n\n" + _string(obj, "input", where)
        pairs.append(Pair(f"{path.stem}/{number}", instruction, output, "user"))
    return pairs


def _file_segments(path: Path, id_prefix: str) -> list[Segment]:
    """A .txt file is one segment titled by its name; a .md file is cut at its headings like the Python docs, any
    text before the first heading titled by the file's name."""
    text = read_text(path).strip()
    pieces = [(path.stem, text)]
    if path.suffix == ".md":
        lines = text.split("\n")
        headings = markdown_headings(lines)
        preamble = "\n".join(lines[: headings[0][0]]).strip() if headings else text
        sections = section_tree(lines, headings, lambda body: "\n".join(body).strip())
        pieces = [(path.stem, preamble)] * bool(preamble) + [piece for s in sections for piece in split_section(s)]
    return [Segment(f"{id_prefix}/{k}", title, body, "user") for k, (title, body) in enumerate(pieces)]


def user_segments(path: str | Path) -> list[Segment]:
    """Segments from a folder of .txt/.md files (searched recursively), one such file, or a JSONL file with a
    ``text`` and optional ``title`` per line (title: the file's name when absent). Ids start with the folder's or
    file's name, as in :func:`selfknow.rag.corpus.user_passages`."""
    path = Path(path)
    if path.is_dir():
        return [segment for file, prefix in text_files(path) for segment in _file_segments(file, prefix)]
    if path.suffix in (".txt", ".md") and path.is_file():
        return _file_segments(path, path.stem)
    if path.suffix != ".jsonl":
        raise DataError(f"{path}: expected a folder of .txt/.md files, a .txt/.md file or a .jsonl file")
    segments = []
    for number, obj in _jsonl(path):
        title = obj.get("title", path.stem)
        if not isinstance(title, str):
            raise DataError(f"{path}:{number}: field 'title' must be a string, got {title!r:.40}")
        segments.append(Segment(f"{path.stem}/{number}", title, _string(obj, "text", f"{path}:{number}"), "user"))
    return segments


_HUB_COLUMNS = (("instruction", "output"), ("instruction", "response"), ("prompt", "response"))
_OASST = ("message_id", "parent_id", "role", "lang", "rank", "text")


def hub_pairs(dataset: str, split: str = "train") -> list[Pair]:
    """Pairs from a Hugging Face dataset: OASST1-style message trees give their first turns (an English prompter
    message that starts a tree with its rank-0 assistant reply, the paper's seed); other datasets need
    instruction/output, instruction/response or prompt/response columns (an ``input`` column is appended)."""
    import datasets as hf

    try:
        rows = hf.load_dataset(dataset, split=split)
    except Exception as err:  # any hub, network or cache failure means the same to the user
        raise DataError(
            f"could not load '{dataset}' from the Hugging Face hub ({type(err).__name__}: {err}); "
            "it needs network access or a local cache"
        ) from None
    columns, source = list(rows.column_names), f"hub:{dataset}"
    if {"message_id", "parent_id", "role"} <= set(columns):
        if missing := [c for c in _OASST if c not in columns]:
            raise DataError(f"{dataset}: a message-tree dataset needs column(s) {', '.join(missing)}")
        best = {r["parent_id"]: r["text"] for r in rows if r["role"] == "assistant" and r["rank"] == 0}
        return [
            Pair(f"{dataset}/{r['message_id']}", r["text"].strip(), best[r["message_id"]].strip(), source)
            for r in rows
            if r["role"] == "prompter" and r["parent_id"] is None and r["lang"] == "en" and r["message_id"] in best
        ]
    names = next((names for names in _HUB_COLUMNS if set(names) <= set(columns)), None)
    if names is None:
        missing = [c for c in _HUB_COLUMNS[0] if c not in columns]
        raise DataError(
            f"{dataset}: missing column(s) {', '.join(missing)} (also accepted: instruction/response, "
            f"prompt/response); it has {', '.join(columns)}"
        )
    pairs = []
    for index, row in enumerate(rows):
        where = f"{dataset} ({split} row {index})"
        instruction, output = _string(row, names[0], where), _string(row, names[1], where)
        if row.get("input"):
            instruction += "\n\n" + _string(row, "input", where)
        pairs.append(Pair(f"{dataset}/{split}/{index}", instruction, output, source))
    return pairs


# splits and files ----------------------------------------------------------------------------------------------


def hold_out(pairs: Sequence[Pair], n: int = 60, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(rest, held out): ``n`` pairs drawn by ``seed`` from the sorted ids, so the draw does not depend on the
    order pairs come in. Hold them out before anything is trained, so no model has seen them."""
    ids = sorted(pair.id for pair in pairs)
    if len(set(ids)) != len(ids):
        raise DataError(f"duplicate pair id {next(i for i, j in zip(ids, ids[1:], strict=False) if i == j)!r}")
    if not 0 <= n < len(ids):
        raise DataError(f"cannot hold out {n} of {len(ids)} pairs and train on the rest")
    held = set(rng_for("hold-out", seed).sample(ids, n))
    return [p for p in pairs if p.id not in held], [p for p in pairs if p.id in held]


def _read(path: str | Path, cls: type[Any], what: str) -> list[Any]:
    rows = read_rows(path, cls, what)
    for row in rows:
        if not all(isinstance(getattr(row, f.name), str) for f in fields(cls)):
            raise DataError(f"{path}: {what} {row.id!r} has a field that is not a string")
    return rows


def write_pairs(path: str | Path, pairs: Iterable[Pair]) -> None:
    write_rows(path, pairs)


def read_pairs(path: str | Path) -> list[Pair]:
    """Pairs written by :func:`write_pairs` (for a user's own JSONL, see :func:`user_pairs`)."""
    return _read(path, Pair, "pair")


def write_segments(path: str | Path, segments: Iterable[Segment]) -> None:
    write_rows(path, segments)


def read_segments(path: str | Path) -> list[Segment]:
    return _read(path, Segment, "segment")
