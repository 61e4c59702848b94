"""Blob URLs that may carry a SAS, which must never be printed, logged or stored (docs/extension-contract.md).

``BlobUrl`` keeps the SAS but shows only the blob (and a ``snapshot``/``versionid`` parameter):
``str()``, ``repr()``, f-strings and ``stored`` never contain it; ``with_sas()`` is the one explicit
way to the full URL, for handing it to the extension. ``base_of`` and ``without_secrets`` are the
same rules for plain strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from shared.errors import ValidationError

# A snapshot or version of a blob is part of what the URL names, not a credential.
KEPT_PARAMETERS = frozenset({"snapshot", "versionid"})


def base_of(url: str) -> str:
    """The URL without any query: the blob itself."""
    return url.split("?", 1)[0]


def without_secrets(url: object) -> str | None:
    """The URL with only its ``snapshot``/``versionid`` parameters (None for what is not a URL)."""
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    keep = [pair for pair in parts.query.split("&") if pair.split("=", 1)[0].lower() in KEPT_PARAMETERS]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(keep), ""))


@dataclass(frozen=True)
class BlobUrl:
    """A blob URL whose SAS cannot leak through printing, logging or storing it."""

    _full: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self._full, str) or not self._full.startswith(("http://", "https://")):
            raise ValidationError("a blob URL must start with http:// or https://", field="url")

    @property
    def base(self) -> str:
        """The blob without any query."""
        return base_of(self._full)

    @property
    def stored(self) -> str:
        """What may be kept or shown: the blob and its snapshot or version, never a SAS."""
        return without_secrets(self._full) or self.base

    @property
    def has_sas(self) -> bool:
        return self.stored != self._full

    def with_sas(self) -> str:
        """The full URL, SAS included: only for handing to the extension, never for a log or a record."""
        return self._full

    def __str__(self) -> str:
        return self.stored

    def __repr__(self) -> str:
        return f"BlobUrl({self.stored!r})"

    def __reduce__(self) -> tuple[type[BlobUrl], tuple[str]]:
        # Pickling (a queue, a cache) keeps what may be stored, not the SAS.
        return BlobUrl, (self.stored,)


def container_and_name(url: str) -> tuple[str, str]:
    """(container, blob name) of a blob URL, account-host style or path style (Azurite, emulators:
    ``http://127.0.0.1:10000/<account>/<container>/<blob>``); the blob name may hold slashes."""
    host, _, path = base_of(url).split("://", 1)[-1].partition("/")
    parts = path.split("/")
    if (":" in host or host.startswith(("127.", "localhost"))) and len(parts) > 2:
        parts = parts[1:]
    if len(parts) < 2 or not parts[0] or not parts[-1]:
        raise ValueError(f"{base_of(url)} names no blob")
    return parts[0], "/".join(parts[1:])
