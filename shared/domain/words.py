"""The word a record or a document uses for an enum member where it is not the member's value: records
and output written before one enum replaced several keep their words, and each adapter maps them here."""
from __future__ import annotations

from enum import Enum
from typing import Generic, Mapping, TypeVar

E = TypeVar("E", bound=Enum)


class Words(Generic[E]):
    """A two-way table between an enum's members and one field's words: every member has its own word, so
    a member added later without one fails at import, not when a record is written."""

    def __init__(self, words: Mapping[E, str]):
        self._words = dict(words)
        self._members = {word: member for member, word in words.items()}
        enum = type(next(iter(self._words)))
        if set(self._words) != set(enum) or len(self._members) != len(self._words):
            raise ValueError(f"every {enum.__name__} member needs a word of its own")

    def word(self, member: E) -> str:
        return self._words[member]

    def member(self, word: str) -> E:
        try:
            return self._members[word]
        except KeyError:
            raise ValueError(f"{word!r} is not one of {', '.join(sorted(self._members))}") from None
