"""Paging helpers shared by the quality records and the training jobs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from service.records.paging import (
    check_page_size,
    decode_page_token,
    encode_page_token,
    split_page,
)


@dataclass
class _Row:
    id: int


def test_a_token_names_the_last_row_of_the_page():
    assert decode_page_token("") is None
    assert decode_page_token(encode_page_token(42)) == 42
    with pytest.raises(ValueError, match="Argument 'page_token' 'garbage!'"):
        decode_page_token("garbage!")
    with pytest.raises(ValueError, match="page_token"):
        decode_page_token(encode_page_token(1).replace("aWQ", "eGQ"))  # "xd:1"


def test_split_page_gives_a_token_only_when_more_rows_follow():
    rows = [_Row(i) for i in (9, 8, 7)]
    page, token = split_page(rows, 2)
    assert [r.id for r in page] == [9, 8] and decode_page_token(token) == 8
    assert split_page(rows[:2], 2) == (rows[:2], "")
    assert split_page([], 2) == ([], "")


@pytest.mark.parametrize("size", [0, 501])
def test_page_size_out_of_range_names_the_argument(size):
    check_page_size(500, 500)
    with pytest.raises(ValueError, match=f"'page_size' must be 1..500, got {size}"):
        check_page_size(size, 500)
