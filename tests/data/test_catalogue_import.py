"""Catalogue files: good rows become store rows; bad rows name line and field, never the value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from privrec.core.errors import ValidationError
from privrec.data.catalogue_import import read_catalogue, validate_records

SECRET = "jane.doe@example.com"  # a value that must never appear in a reject

GOOD = {
    "item": "sku-1",
    "title": "Red mug",
    "description": "A mug",
    "category": "Home >Kitchen>  Mugs",
    "brand": "Acme",
    "price": 12.5,
    "currency": "eur",
    "stock": 3,
    "image_url": "https://cdn.example.com/1.jpg",
    "attributes": {"colour": "red"},
}
BAD = [
    ({"title": SECRET}, "item"),
    ({"item": "a", "price": SECRET}, "price"),
    ({"item": "a", "price": -1}, "price"),
    ({"item": "a", "currency": SECRET}, "currency"),
    ({"item": "a", "in_stock": SECRET}, "in_stock"),
    ({"item": "a", "stock": -2}, "stock"),
    ({"item": "a", "image_url": f"javascript:{SECRET}"}, "image_url"),
    ({"item": "a", "image_url": f"ftp://{SECRET}"}, "image_url"),
    ({"item": "a", "attributes": [SECRET]}, "attributes"),
    ({"item": "a", "category": f"A > > {SECRET}"}, "category"),
    ({"item": ["x"]}, "item"),
    ({"item": "a", SECRET: 1}, "row"),
]


def test_good_row_becomes_store_row() -> None:
    res = validate_records([(1, GOOD)])
    assert res.rejects == [] and res.accepted == 1
    row = res.frame.iloc[0]
    assert list(res.frame.columns) == [
        "item",
        "title",
        "category",
        "brand",
        "price",
        "in_stock",
        "text",
        "image_url",
    ]
    assert row["image_url"] == "https://cdn.example.com/1.jpg"
    assert row["category"] == "Home > Kitchen > Mugs"
    assert row["text"] == "A mug" and row["price"] == 12.5 and bool(row["in_stock"]) is True
    assert res.dropped == ["attributes", "currency"]  # image_url is stored


@pytest.mark.parametrize(("rec", "field"), BAD)
def test_bad_rows_name_line_and_field_never_the_value(rec: dict[str, Any], field: str) -> None:
    res = validate_records([(1, GOOD), (7, rec)])
    assert res.accepted == 1
    [r] = res.rejects
    assert (r.line, r.field) == (7, field)
    assert SECRET not in json.dumps(res.report())


def test_jsonl_lines(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text(
        json.dumps(GOOD) + "\n\n" + "{not json " + SECRET + "\n" + json.dumps({"item": 5}) + "\n"
    )
    res = read_catalogue(f)
    assert res.rows == 3 and res.accepted == 2
    assert [(r.line, r.field) for r in res.rejects] == [(3, "row")]
    assert SECRET not in json.dumps(res.report())
    assert sorted(res.frame["item"]) == ["5", "sku-1"]


def test_csv_lines_and_counts(tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_text(
        "item,title,price,in_stock,attributes\n"
        'a,Mug,3.5,true,"{""k"": 1}"\n'
        f"b,Cup,{SECRET},0,\n"
        "c,Pot,,no,\n"
    )
    res = read_catalogue(f)
    assert [(r.line, r.field) for r in res.rejects] == [(3, "price")]
    got = res.frame.set_index("item")
    assert got.loc["a", "price"] == 3.5 and bool(got.loc["a", "in_stock"]) is True
    assert bool(got["price"].isna()["c"]) and bool(got.loc["c", "in_stock"]) is False
    assert SECRET not in json.dumps(res.report())


def test_parquet_rows(tmp_path: Path) -> None:
    f = tmp_path / "c.parquet"
    pd.DataFrame(
        {
            "item": ["a", "b"],
            "title": ["Mug", "Cup"],
            "price": [1.0, -5.0],
            "in_stock": [True, False],
        }
    ).to_parquet(f)
    res = read_catalogue(f)
    assert [(r.line, r.field) for r in res.rejects] == [(2, "price")]
    assert res.frame["item"].tolist() == ["a"]


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as e:
        read_catalogue(tmp_path / "c.xml")
    assert e.value.field == "path"
    with pytest.raises(ValidationError):
        read_catalogue(tmp_path / "missing.csv")


def test_last_row_wins_per_item() -> None:
    res = validate_records([(1, {"item": "a", "title": "old"}), (2, {"item": "a", "title": "new"})])
    assert res.frame["title"].tolist() == ["new"]
