"""reST and Markdown documents as plain-text sections: markup stripped the way a reader sees the rendered page,
headings found as docutils finds them, and each section kept with its subsections so a segment can be "the text
under a header with its lower-level subtrees" (the backtranslation paper's App. E)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MAX_CHARS = 3000

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


Heading = tuple[int, int, int, str]  # (first line, first line after it, level, title)


@dataclass
class Section:
    title: str
    text: str  # the text before the first subsection
    children: list[Section] = field(default_factory=list)


def _rst_headings(lines: list[str]) -> list[Heading]:
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


def markdown_headings(lines: list[str]) -> list[Heading]:
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (heading := re.fullmatch(r"(#{1,6})\s+(.+?)\s*#*\s*", line)):
            out.append((i, i + 1, len(heading[1]), heading[2]))
    return out


def section_tree(lines: list[str], headings: list[Heading], convert: Callable[[list[str]], str]) -> list[Section]:
    roots: list[Section] = []
    stack: list[tuple[int, Section]] = []
    for k, (_, after, level, title) in enumerate(headings):
        stop = headings[k + 1][0] if k + 1 < len(headings) else len(lines)
        section = Section(title, convert(lines[after:stop]))
        while stack and stack[-1][0] >= level:
            stack.pop()
        (stack[-1][1].children if stack else roots).append(section)
        stack.append((level, section))
    return roots


def walk(sections: Iterable[Section]) -> Iterator[Section]:
    for section in sections:
        yield section
        yield from walk(section.children)


def full_text(section: Section) -> str:
    """The section's text with every subsection's title and text."""
    parts = [section.text, *(f"{child.title}\n\n{full_text(child)}".strip() for child in section.children)]
    return "\n\n".join(part for part in parts if part)


def split_section(section: Section, limit: int = MAX_CHARS) -> list[tuple[str, str]]:
    """(title, text) segments: the whole subtree when it fits in ``limit`` characters, else the section's own text
    and the segments of each subsection."""
    whole = full_text(section)
    if len(whole) <= limit or not section.children:
        return [(section.title, whole)] if whole else []
    own = [(section.title, section.text)] if section.text else []
    return own + [piece for child in section.children for piece in split_section(child, limit)]


def rst_tree(path: Path) -> list[Section]:
    lines = path.read_text(encoding="utf-8").expandtabs(8).split("\n")
    return section_tree(lines, _rst_headings(lines), _rst_text)
