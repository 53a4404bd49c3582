"""A seeded fictional world: people, cities, countries, companies, universities and bands.

`generate_world(seed, size)` is a pure function of its arguments and WORLD_VERSION: the same seed
gives the same world on every machine and Python version. Only `random.Random(seed)` draws; every
collection is walked in list order (never set or dict-hash order), so nothing depends on
PYTHONHASHSEED.

Names come from `agent.worlds.pocket.names` and include deliberate near-identical distractors: persons
sharing a given name, family names that differ by an ending ("Brom" / "Bromer"), companies and
universities sharing a stem, bands sharing an adjective.

Relations (subject kind → object kind) are listed in RELATIONS; `World.value(name, relation)`
follows one of them.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from agent.worlds.pocket import names as N

WORLD_VERSION = "pw-1"

KINDS: tuple[str, ...] = ("person", "city", "country", "company", "university", "band")


@dataclass(frozen=True)
class Relation:
    subject: str  # entity kind
    obj: str  # entity kind, or "year"
    attr: str  # the subject's field that holds it


RELATIONS: dict[str, Relation] = {
    "born_in": Relation("person", "city", "born_in"),
    "birth_year": Relation("person", "year", "birth_year"),
    "studied_at": Relation("person", "university", "studied_at"),
    "works_for": Relation("person", "company", "works_for"),
    "founded": Relation("person", "company", "founded"),
    "member_of": Relation("person", "band", "member_of"),
    "founded_by": Relation("company", "person", "founder"),
    "founded_year": Relation("company", "year", "founded_year"),
    "headquartered_in": Relation("company", "city", "headquartered_in"),
    "in_country": Relation("city", "country", "country"),
    "capital": Relation("country", "city", "capital"),
    "located_in": Relation("university", "city", "located_in"),
    "established": Relation("university", "year", "established"),
    "formed_in": Relation("band", "city", "formed_in"),
    "formed_year": Relation("band", "year", "formed_year"),
}


# --- entities -------------------------------------------------------------------------


@dataclass
class Person:
    name: str
    pronoun: str  # "He" or "She": documents vary between the name and a pronoun
    job: str
    birth_year: int
    born_in: str
    studied_at: str
    works_for: str | None = None
    founded: str | None = None
    member_of: str | None = None


@dataclass
class City:
    name: str
    country: str
    population: int  # thousands of inhabitants: decoration that no question asks about


@dataclass
class Country:
    name: str
    capital: str


@dataclass
class Company:
    name: str
    founder: str
    founded_year: int
    headquartered_in: str


@dataclass
class University:
    name: str
    located_in: str
    established: int


@dataclass
class Band:
    name: str
    formed_in: str
    formed_year: int
    members: list[str] = field(default_factory=list)


ENTITY_TYPES = {"person": Person, "city": City, "country": Country, "company": Company,
                "university": University, "band": Band}


@dataclass(frozen=True)
class WorldSize:
    """How many entities of each kind, and how many questions in each split."""

    persons: int
    cities: int
    countries: int
    companies: int
    universities: int
    bands: int
    train: int
    dev: int
    test: int


SIZES: dict[str, WorldSize] = {
    # ~100 documents: for fast tests
    "tiny": WorldSize(persons=60, cities=14, countries=4, companies=14, universities=6, bands=6,
                      train=120, dev=20, test=30),
    "small": WorldSize(persons=160, cities=36, countries=8, companies=40, universities=14,
                       bands=14, train=400, dev=60, test=90),
    # >= 1,500 documents and train/dev/test >= 2,000/200/300 questions
    "default": WorldSize(persons=1000, cities=220, countries=30, companies=260,
                         universities=80, bands=90, train=2400, dev=250, test=350),
}

JOBS = ("engineer", "painter", "teacher", "chemist", "writer", "architect", "pilot", "lawyer",
        "farmer", "designer", "doctor", "baker", "sailor", "translator", "historian")


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def doc_id(kind: str, name: str) -> str:
    """The corpus id of an entity's document (its url is pocket://<doc_id>)."""
    return f"{kind}/{slug(name)}"


@dataclass
class World:
    version: str
    seed: int
    persons: list[Person]
    cities: list[City]
    countries: list[Country]
    companies: list[Company]
    universities: list[University]
    bands: list[Band]

    def entities(self, kind: str) -> list:
        return getattr(self, _PLURAL[kind])

    def kind_of(self, name: str) -> str:
        return self._index()[name][0]

    def get(self, name: str):
        return self._index()[name][1]

    def value(self, name: str, relation: str):
        """Follow `relation` from the entity called `name`; None where it has no such link."""
        rel = RELATIONS[relation]
        kind, ent = self._index()[name]
        if kind != rel.subject:
            raise ValueError(f"{relation} starts at a {rel.subject}, {name!r} is a {kind}")
        return getattr(ent, rel.attr)

    def relations(self) -> list[list]:
        """Every (subject, relation, object) triple, sorted: world.json's flat view."""
        out = []
        for name_, rel in RELATIONS.items():
            for ent in self.entities(rel.subject):
                v = getattr(ent, rel.attr)
                if v is not None:
                    out.append([ent.name, name_, v])
        return sorted(out, key=lambda t: (t[0], t[1], str(t[2])))

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "seed": self.seed,
            "entities": {k: [asdict(e) for e in self.entities(k)] for k in KINDS},
            "relations": self.relations(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "World":
        ents = {k: [ENTITY_TYPES[k](**e) for e in d["entities"][k]] for k in KINDS}
        return cls(d["version"], d["seed"], *(ents[k] for k in KINDS))

    def _index(self) -> dict:
        # Built lazily once; names are unique across all kinds (generate_world checks).
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = {e.name: (k, e) for k in KINDS for e in self.entities(k)}
            self.__dict__["_idx"] = idx
        return idx


_PLURAL = {"person": "persons", "city": "cities", "country": "countries",
           "company": "companies", "university": "universities", "band": "bands"}


# --- generation -----------------------------------------------------------------------


def resolve_size(size: str | WorldSize) -> WorldSize:
    if isinstance(size, WorldSize):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def generate_world(seed: int, size: str | WorldSize = "default") -> World:
    """The world for `seed`: byte-for-byte the same on every run."""
    sz = resolve_size(size)
    _check_capacity(sz)
    rng = random.Random(seed)
    countries, cities = _places(rng, sz)
    city_names = [c.name for c in cities]
    universities = [University(n, rng.choice(city_names), rng.randint(1650, 1960))
                    for n in _compound_names(rng, sz.universities, N.UNIVERSITY_STEM,
                                             N.UNIVERSITY_KIND, "{0} {1}")]
    persons = _persons(rng, sz.persons, city_names, [u.name for u in universities])
    companies = _companies(rng, sz.companies, persons, city_names)
    bands = _bands(rng, sz.bands, persons, city_names)
    _employ(rng, persons, [c.name for c in companies])
    world = World(WORLD_VERSION, seed, persons, cities, countries, companies, universities, bands)
    _check_unique_names(world)
    return world


def _check_capacity(sz: WorldSize) -> None:
    limits = {"countries": (sz.countries, len(N.COUNTRY)), "cities": (sz.cities, len(N.CITY))}
    for what, (want, have) in limits.items():
        if want > have:
            raise ValueError(f"{what}: {want} asked, the name lists hold {have}")
    if sz.cities < 2 * sz.countries:
        raise ValueError("need at least two cities a country")
    if sz.companies + 4 * sz.bands > sz.persons:
        raise ValueError("too few persons for the founders and band members asked for")


def _places(rng: random.Random, sz: WorldSize) -> tuple[list[Country], list[City]]:
    country_names = rng.sample(N.COUNTRY, sz.countries)
    city_names = rng.sample(N.CITY, sz.cities)
    # Every country gets two cities first (its capital and one more), the rest at random.
    owners = [country_names[i % sz.countries] for i in range(2 * sz.countries)]
    owners += [rng.choice(country_names) for _ in range(sz.cities - len(owners))]
    cities = [City(c, k, rng.randint(8, 900)) for c, k in zip(city_names, owners)]
    capital = {}
    for c in cities:  # the first city dealt to a country is its capital
        capital.setdefault(c.country, c.name)
    return [Country(k, capital[k]) for k in country_names], cities


def _compound_names(rng: random.Random, n: int, heads: tuple, tails: tuple, fmt: str,
                    twin_rate: float = 0.35) -> list[str]:
    """n distinct '<head> <tail>' names; about twin_rate of them reuse an earlier head."""
    if n > len(heads) * len(tails):
        raise ValueError(f"cannot make {n} distinct names from {len(heads)}x{len(tails)} words")
    out: list[str] = []
    used_heads: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        if used_heads and rng.random() < twin_rate:
            head = rng.choice(used_heads)  # a hard distractor: same head, another tail
        else:
            head = rng.choice(heads)
        name = fmt.format(head, rng.choice(tails))
        if name in seen:
            continue
        seen.add(name)
        out.append(name)
        if head not in used_heads:
            used_heads.append(head)
    return out


def _person_names(rng: random.Random, n: int) -> list[str]:
    """n distinct full names with three kinds of near-identical distractor."""
    out: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name not in seen and len(out) < n:
            seen.add(name)
            out.append(name)

    while len(out) < n:
        r = rng.random()
        if r < 0.12:  # "Kaste Brom" and "Kaste Bromer"
            given, pair = rng.choice(N.GIVEN), rng.choice(N.FAMILY_PAIRS)
            add(f"{given} {pair[0]}")
            add(f"{given} {pair[1]}")
        elif r < 0.30 and out:  # same given name as someone else, another family name
            add(f"{rng.choice(out).split()[0]} {rng.choice(N.FAMILY_ALL)}")
        else:
            add(f"{rng.choice(N.GIVEN)} {rng.choice(N.FAMILY_ALL)}")
    return out


def _persons(rng: random.Random, n: int, cities: list[str], universities: list[str]) -> list[Person]:
    return [Person(name=name, pronoun=rng.choice(("He", "She")), job=rng.choice(JOBS),
                   birth_year=rng.randint(1900, 1995), born_in=rng.choice(cities),
                   studied_at=rng.choice(universities))
            for name in _person_names(rng, n)]


def _companies(rng: random.Random, n: int, persons: list[Person], cities: list[str]) -> list[Company]:
    names = _compound_names(rng, n, N.COMPANY_STEM, N.COMPANY_SUFFIX, "{0} {1}")
    founders = rng.sample(persons, n)
    out = []
    for name, founder in zip(names, founders):
        founder.founded = name
        year = min(2020, founder.birth_year + rng.randint(22, 55))
        out.append(Company(name, founder.name, year, rng.choice(cities)))
    return out


def _bands(rng: random.Random, n: int, persons: list[Person], cities: list[str]) -> list[Band]:
    names = _compound_names(rng, n, N.BAND_ADJECTIVE, N.BAND_NOUN, "The {0} {1}")
    free = [p for p in persons if p.founded is None]
    rng.shuffle(free)
    out = []
    for name in names:
        members = [free.pop() for _ in range(rng.randint(2, 4))]
        for m in members:
            m.member_of = name
            m.job = "musician"
        year = min(2020, max(m.birth_year for m in members) + rng.randint(16, 30))
        out.append(Band(name, rng.choice(cities), year, [m.name for m in members]))
    return out


def _employ(rng: random.Random, persons: list[Person], companies: list[str]) -> None:
    for p in persons:
        if p.founded is None and rng.random() < 0.75:
            p.works_for = rng.choice(companies)


def _check_unique_names(world: World) -> None:
    names = [e.name for k in KINDS for e in world.entities(k)]
    if len(names) != len(set(names)):
        raise AssertionError("entity names must be unique across kinds")
