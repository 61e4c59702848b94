"""The word a record or a document uses for an enum member where it is not the member's value: records
and output written before one enum replaced several keep their words, and each adapter maps them here."""
from __future__ import annotations

from enum import Enum
from typing import Generic, Mapping, TypeVar

E = TypeVar("E", bound=Enum)


class Words(Generic[E]):
    """A two-way table between an enum's members and one field's words (one word per member)."""

    def __init__(self, words: Mapping[E, str]):
        self._words = dict(words)
        self._members = {word: member for member, word in words.items()}
        if len(self._members) != len(self._words):
            raise ValueError("two members share a word")

    def word(self, member: E) -> str:
        return self._words[member]

    def member(self, word: str) -> E:
        try:
            return self._members[word]
        except KeyError:
            raise ValueError(f"{word!r} is not one of {', '.join(sorted(self._members))}") from None
