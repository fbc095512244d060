"""The prepared-statement wrapper's SQL rewriting (pure; execution is covered by the ledger
tests against a real Postgres)."""

from __future__ import annotations

import pytest

from email_worker.ledger.prepared import Prepared


def test_placeholders_become_positions_in_order_of_first_use() -> None:
    statement = Prepared(
        "ew_t", "SELECT %(b)s, %(a)s::int + %(n)s, %(b)s IS NULL", {"n": "integer"}
    )
    assert statement.parameters == ("b", "a", "n")
    assert statement.prepare_sql == (
        "PREPARE ew_t (text, text, integer) AS SELECT $1, $2::int + $3, $1 IS NULL"
    )
    assert statement.execute_sql == "EXECUTE ew_t (%(b)s, %(a)s, %(n)s)"


def test_a_type_for_a_missing_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="not in the statement"):
        Prepared("ew_t", "SELECT %(a)s", {"typo": "integer"})


def test_literal_percent_is_refused() -> None:
    with pytest.raises(ValueError, match="percent"):
        Prepared("ew_t", "SELECT 'x' LIKE '%%y'")
