import pytest

from core.ids import BIGINT_MAX, id_parse
from core.pagination import cursor_parse


@pytest.mark.parametrize(
    "raw, expected",
    [(7, 7), ("7", 7), (" 42 ", 42), (str(BIGINT_MAX), BIGINT_MAX), (BIGINT_MAX, BIGINT_MAX)],
)
def test_id_parse_accepts_positive_bigints_as_ints_or_ascii_digits(raw, expected):
    assert id_parse(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        # str.isdigit() accepts these; int() refuses the first two and reads the last as 12.
        *["²", "①", "١٢", "１２", "७"],
        *["0", "-1", "+1", "1.5", "1e3", "", " ", "abc", "1\x00"],
        *[str(BIGINT_MAX + 1), "9" * 5000, BIGINT_MAX + 1, 0, -5, True, 1.0, None, [1]],
    ],
)
def test_id_parse_refuses_everything_else(raw):
    assert id_parse(raw) is None


@pytest.mark.parametrize("raw", ["²", "①", "١٢", "0", "9" * 5000])
def test_malformed_cursor_is_a_bad_request(raw):
    from django.core.exceptions import BadRequest

    with pytest.raises(BadRequest):
        cursor_parse(raw)


def test_no_cursor_is_the_first_page():
    assert cursor_parse(None) is None and cursor_parse("") is None
