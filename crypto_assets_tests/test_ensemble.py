"""Soft-voting ensemble: weights combine as configured; weights that don't sum to one are an error."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from crypto_assets.ensemble import soft_vote

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def orders(rows: list[tuple[str, int, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": [r[0] for r in rows], "ts": [T0 + r[1] * H for r in rows], "weight": [r[2] for r in rows]},
        schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC"), "weight": pl.Float64},
    )


def test_weighted_average_of_held_targets() -> None:
    lstm = orders(
        [
            ("BTC/USDT", 0, 0.5),
            ("ETH/USDT", 0, 0.5),
            ("BTC/USDT", 4, None),
            ("BTC/USDT", 24, 1.0),
            ("ETH/USDT", 24, 0.0),
        ]
    )
    ppo = orders([("BTC/USDT", 0, 1.0), ("BTC/USDT", 1, 0.0), ("BTC/USDT", 2, 0.2)])
    out = soft_vote({"lstm": lstm, "ppo": ppo}, {"lstm": 0.4, "ppo": 0.6})
    got = {(r["symbol"], int((r["ts"] - T0) / H)): r["weight"] for r in out.iter_rows(named=True)}
    assert got == pytest.approx(
        {
            ("BTC/USDT", 0): 0.4 * 0.5 + 0.6 * 1.0,
            ("BTC/USDT", 1): 0.4 * 0.5 + 0.6 * 0.0,  # lstm holds its 0.5
            ("BTC/USDT", 2): 0.4 * 0.5 + 0.6 * 0.2,
            ("BTC/USDT", 24): 0.4 * 1.0 + 0.6 * 0.2,  # ppo holds its 0.2; lstm's null at bar 4 is no order
            ("ETH/USDT", 0): 0.4 * 0.5,  # ppo never ordered ETH: its target is 0
            ("ETH/USDT", 24): 0.0,
        }
    )


def test_single_member_with_full_vote_is_that_member() -> None:
    lstm = orders([("BTC/USDT", 0, 0.3), ("BTC/USDT", 5, 0.7)])
    assert soft_vote({"lstm": lstm}, {"lstm": 1.0})["weight"].to_list() == [0.3, 0.7]


@pytest.mark.parametrize("votes", [{"a": 0.5, "b": 0.4}, {"a": 0.7, "b": 0.7}, {"a": 1.5, "b": -0.5}])
def test_votes_must_sum_to_one_and_be_non_negative(votes: dict[str, float]) -> None:
    members = {"a": orders([("BTC/USDT", 0, 1.0)]), "b": orders([("BTC/USDT", 0, 0.0)])}
    with pytest.raises(ValueError, match="ensemble vote weights"):
        soft_vote(members, votes)


def test_members_and_votes_must_match() -> None:
    with pytest.raises(ValueError, match="differ"):
        soft_vote({"a": orders([("BTC/USDT", 0, 1.0)])}, {"b": 1.0})
