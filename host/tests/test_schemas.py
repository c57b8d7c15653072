"""The record schemas (``ttabench.schemas``) describe exactly the records the host writes, and
their errors are one line naming the file and the field."""

from __future__ import annotations

import dataclasses

import pytest

from ttabench.errors import TTABenchError
from ttabench.records import Cell, EstimatorRecord, ViewResult
from ttabench.schemas import (
    CellSchema,
    EstimatorRecordSchema,
    Finite,
    Record,
    ViewResultSchema,
    parse,
)


@pytest.mark.parametrize("record, schema", [(Cell, CellSchema),
                                            (EstimatorRecord, EstimatorRecordSchema),
                                            (ViewResult, ViewResultSchema)])
def test_a_schema_has_the_fields_of_its_record(record, schema) -> None:
    names = {field.alias or name for name, field in schema.model_fields.items()}
    assert names == {f.name for f in dataclasses.fields(record)}


class Pair(Record):
    left: Finite
    right: list[Finite]


@pytest.mark.parametrize("data, expected", [
    ({"left": "1", "right": []}, "f.json: left: input should be a valid number (got '1')"),
    ({"left": 1.0, "right": "12"}, "f.json: right: input should be a valid list (got '12')"),
    ({"left": 1.0, "right": [0.5, float("inf")]}, "f.json: right.1: input should be a finite"),
    ({"left": 1.0, "right": [], "extra": 2}, "f.json: extra: extra inputs are not permitted"),
    ([1, 2], "f.json: (top level): input should be a valid dictionary"),
])
def test_parse_names_the_field_in_one_line(data, expected) -> None:
    with pytest.raises(TTABenchError) as info:
        parse(Pair, data, "f.json")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_parse_accepts_a_whole_record() -> None:
    assert parse(Pair, {"left": 2, "right": [0.5]}, "f.json") == Pair(left=2.0, right=[0.5])
