"""`cloudshop.aws`'s item conversion agrees with boto3's `TypeSerializer` / `TypeDeserializer`.

The services convert items themselves (boto3's import cost a Lambda's cold start ~55 ms); boto3,
still a development dependency, is the reference both directions are checked against.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from cloudshop.aws import from_item, to_item, to_value

VALUES: list[Any] = [
    "",
    "text ünïcode",
    0,
    -17,
    10**30,
    Decimal("12.50"),
    Decimal("-0.001"),
    True,
    False,
    None,
    b"\x00bytes",
    [],
    [1, "a", None, [True]],
    {},
    {"nested": {"list": [Decimal("1.5"), 2], "flag": False}},
    {"a", "b"},
    {1, 2, Decimal("3.5")},
    {b"x", b"y"},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_serializes_as_boto3_serializes_it(value: Any) -> None:
    expected = TypeSerializer().serialize(value)
    ours = to_value(value)
    # Sets are unordered: boto3 keeps the set's iteration order, we sort.
    for kind in ("SS", "NS", "BS"):
        if kind in expected:
            assert sorted(ours[kind]) == sorted(expected[kind])
            return
    assert ours == expected


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_an_attribute_reads_back_as_boto3_reads_it_with_numbers_made_plain(value: Any) -> None:
    attribute = TypeSerializer().serialize(value)
    expected = _plain(TypeDeserializer().deserialize(attribute))
    assert from_item({"value": attribute}) == {"value": expected}


def test_an_item_round_trips_and_drops_none() -> None:
    item = {"id": "o-1", "total": 1250, "price": Decimal("12.5"), "lines": [{"sku": "p", "qty": 2}], "gone": None}
    stored = to_item(item)
    assert "gone" not in stored
    assert from_item(stored) == {"id": "o-1", "total": 1250, "price": 12.5, "lines": [{"sku": "p", "qty": 2}]}


@pytest.mark.parametrize("value", [1.5, Decimal("NaN"), Decimal("Infinity"), object()], ids=repr)
def test_what_dynamodb_cannot_store_is_refused_as_boto3_refuses_it(value: Any) -> None:
    with pytest.raises(TypeError):
        TypeSerializer().serialize(value)
    with pytest.raises(TypeError):
        to_value(value)


def test_an_empty_set_is_refused_before_dynamodb_refuses_it() -> None:
    # boto3 sends it as an empty number set, which DynamoDB answers with a ValidationException.
    with pytest.raises(TypeError):
        to_value(set())


def _plain(value: Any) -> Any:
    # What every adapter wants: whole numbers as int, the rest as float, bytes as bytes.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value
