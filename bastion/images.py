"""Container image references, and the rule that approved images are pinned by digest."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ImageRef", "parse_pinned_image"]

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]+)?"
_REF = re.compile(
    rf"(?P<repository>(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


def parse_pinned_image(text: str) -> ImageRef:
    """Parse ``registry/name[:tag]@sha256:<64 hex>``; refuse anything not pinned by digest."""
    m = _REF.fullmatch(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not an image reference; expected registry/name@sha256:<64 hex digits>"
        )
    if m.group("digest") is None:
        raise ValueError(
            f"image {text!r} is not pinned by digest; a tag can be moved to other content, so "
            "use registry/name@sha256:<64 hex digits> (docker buildx imagetools inspect shows it)"
        )
    return ImageRef(m.group("repository"), m.group("tag"), m.group("digest"))
