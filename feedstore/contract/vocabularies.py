"""The open vocabularies, read from one editable file (``vocabularies.toml`` beside this module,
or ``FEED_CONTRACT_VOCABULARIES``): categories, age ranges, countries, languages, media types,
devices and platforms. ``feedstore.contract.rules`` exposes them as constants for the code that
is built once per process (feature shapes); validators and suites ask ``current()`` when they
are built, so a process started after an edit sees the new values everywhere."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("vocabularies.toml")


class VocabularyError(ValueError):
    """The vocabulary file is missing, not TOML, or a list is empty, repeated or not strings."""


@dataclass(frozen=True)
class Vocabularies:
    categories: tuple[str, ...]
    age_ranges: tuple[str, ...]
    countries: tuple[str, ...]
    languages: tuple[str, ...]
    media_types: tuple[str, ...]
    devices: tuple[str, ...]
    platforms: tuple[str, ...]

    def extended(self, **extra: tuple[str, ...] | list[str]) -> Vocabularies:
        """A copy with values appended to some lists (existing order kept: category slots stay put)."""
        return Vocabularies(**{f.name: getattr(self, f.name) + tuple(v for v in extra.get(f.name, ())
                                                                     if v not in getattr(self, f.name))
                               for f in fields(self)})

    def to_toml(self) -> str:
        return "".join(f"{f.name} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in getattr(self, f.name))}]\n"
                       for f in fields(self))


def load(path: Path | str) -> Vocabularies:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise VocabularyError(f"vocabulary file {path}: {exc}") from exc
    values = {}
    for f in fields(Vocabularies):
        entry = data.get(f.name)
        if not isinstance(entry, list) or not entry or not all(isinstance(v, str) and v for v in entry):
            raise VocabularyError(f"vocabulary file {path}: {f.name} must be a non-empty list of strings")
        if len(set(entry)) != len(entry):
            raise VocabularyError(f"vocabulary file {path}: {f.name} lists a value twice")
        values[f.name] = tuple(entry)
    return Vocabularies(**values)


def configured_file() -> Path:
    from feedstore.settings import get_settings

    return get_settings().contract.vocabularies or DEFAULT_FILE


@lru_cache(maxsize=1)
def current() -> Vocabularies:
    """The configured file's vocabularies, read once per process (``reload`` after an edit)."""
    return load(configured_file())


def reload() -> Vocabularies:
    current.cache_clear()
    return current()
