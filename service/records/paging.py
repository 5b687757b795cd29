"""Paging of newest-first lists: opaque page tokens and the one page-size check.

A token names the last row id of the previous page, so a page stays stable while rows are added.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Protocol, TypeVar


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


RowT = TypeVar("RowT", bound=_HasId)


def encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode()


def decode_page_token(token: str) -> int | None:
    """The row id after which the page starts; None for the first page (an empty token)."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("id:"):
            raise ValueError(text)
        return int(text[3:])
    except ValueError:
        raise ValueError(
            f"Argument 'page_token' {token!r} is not a token from a previous page."
        ) from None


def check_page_size(page_size: int, maximum: int) -> None:
    if not 1 <= page_size <= maximum:
        raise ValueError(f"Argument 'page_size' must be 1..{maximum}, got {page_size}.")


def split_page(rows: Sequence[RowT], page_size: int) -> tuple[list[RowT], str]:
    """The first ``page_size`` of ``rows`` (fetched with one extra) and the next page's token."""
    page = list(rows[:page_size])
    more = len(rows) > page_size
    return page, encode_page_token(page[-1].id) if more and page else ""
