"""Out-of-distribution split builders: deterministic, and no group in two parts."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from segloop.core.splits import (
    balance_domains,
    bitdepth_objective,
    bitdepth_tissue,
    check_no_leak,
    dsb2018_domain,
    grouped_split,
    leave_one_group_out,
    time_blocks,
    usiigaci_acquisition,
    usiigaci_ood_split,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

BITDEPTH_NAMES = [
    f"{objective}__{tissue}_{objective}_{i}.tif"
    for objective in ("20x", "40x_air", "40x_oil", "63x_oil")
    for tissue in ("bone", "heart", "kidney", "liver", "muscle")
    for i in range(1, 4)
]


def test_bitdepth_name_parts():
    assert bitdepth_tissue("40x_air__heart_40x_air_2.tif") == "heart"
    assert bitdepth_objective("40x_air__heart_40x_air_2.tif") == "40x_air"
    assert bitdepth_objective("20x__bone_20x_1.tif") == "20x"
    assert bitdepth_tissue("images/63x_oil__liver_63x_oil_5.tif") == "liver"
    with pytest.raises(ValueError, match="BitDepth"):
        bitdepth_tissue("image01.png")


def test_grouped_split_is_deterministic_and_keeps_groups_whole():
    first = grouped_split(BITDEPTH_NAMES, bitdepth_tissue, (0.6, 0.2, 0.2), seed=3)
    again = grouped_split(list(reversed(BITDEPTH_NAMES)), bitdepth_tissue, (0.6, 0.2, 0.2), 3)
    assert first == again
    check_no_leak(first, bitdepth_tissue)
    assert sorted(sum(first.values(), [])) == sorted(BITDEPTH_NAMES)
    assert all(first[part] for part in ("train", "val", "test"))
    # every objective of a held-out tissue is held out with it
    for part in ("val", "test"):
        tissues = {bitdepth_tissue(n) for n in first[part]}
        assert {bitdepth_objective(n) for n in first[part]} == {
            "20x",
            "40x_air",
            "40x_oil",
            "63x_oil",
        }
        assert not tissues & {bitdepth_tissue(n) for n in first["train"]}
    other_seeds = {
        tuple(grouped_split(BITDEPTH_NAMES, bitdepth_tissue, (0.6, 0.2, 0.2), s)["test"])
        for s in range(6)
    }
    assert len(other_seeds) > 1  # the seed matters


def test_check_no_leak_catches_a_shared_group_and_a_shared_name():
    split = {"train": ["20x__heart_20x_1.tif"], "test": ["63x_oil__heart_63x_oil_1.tif"]}
    with pytest.raises(ValueError, match="heart"):
        check_no_leak(split, bitdepth_tissue)
    check_no_leak(split, bitdepth_objective)  # other objectives: no objective leak
    with pytest.raises(ValueError, match="both"):
        check_no_leak({"train": ["a"], "val": ["a"]}, lambda name: name)


def test_leave_one_group_out_covers_every_group_once():
    folds = leave_one_group_out(BITDEPTH_NAMES, bitdepth_tissue)
    assert [fold.held_out for fold in folds] == ["bone", "heart", "kidney", "liver", "muscle"]
    for fold in folds:
        assert set(fold.train).isdisjoint(fold.test)
        assert len(fold.train) + len(fold.test) == len(BITDEPTH_NAMES)
        check_no_leak({"train": fold.train, "test": fold.test}, bitdepth_tissue)


def test_time_blocks_leave_gaps_between_blocks():
    blocks = time_blocks(84, 3, gap=10)
    assert [len(b) for b in blocks] == [22, 21, 21]
    assert blocks[1][0] - blocks[0][-1] == 11 and blocks[2][0] - blocks[1][-1] == 11
    assert blocks[-1][-1] <= 83
    assert time_blocks(5, 1) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="cannot hold"):
        time_blocks(5, 3, gap=2)


@pytest.mark.skipif(not (SHARED / "dsb2018_stage1_train_fixed").exists(), reason="no shared data")
def test_dsb2018_domains_from_metadata():
    with open(SHARED / "dsb2018_stage1_train_fixed" / "metadata.csv") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    split = grouped_split(sorted(rows), lambda name: dsb2018_domain(rows[name]), seed=2018)
    check_no_leak(split, lambda name: dsb2018_domain(rows[name]))
    assert sum(len(v) for v in split.values()) == len(rows)
    assert dsb2018_domain(rows[split["test"][0]]).count("/") == 1


USIIGACI_NAMES = [f"train_set{i}.tif" for i in range(1, 26)] + [
    f"val_set{i}.tif" for i in range(46, 51)
]


def test_usiigaci_ood_split_validates_on_every_acquisition():
    split = usiigaci_ood_split(list(reversed(USIIGACI_NAMES)))
    assert split == usiigaci_ood_split(USIIGACI_NAMES)  # deterministic, order-free
    assert split["val"] == [f"train_set{i}.tif" for i in (19, 20, 24, 25)]
    assert split["test"] == [f"val_set{i}.tif" for i in range(46, 51)]
    assert len(split["train"]) == 21
    check_no_leak(split, lambda name: name)  # no field in two parts
    for part in ("train", "val"):
        assert {usiigaci_acquisition(n) for n in split[part]} == {
            "usiigaci/large-cells",
            "usiigaci/small-cells",
        }
    with pytest.raises(ValueError, match="Usiigaci field"):
        usiigaci_acquisition("image01.png")
    with pytest.raises(ValueError, match="too few"):
        usiigaci_ood_split(["train_set13.tif", "train_set14.tif", "train_set1.tif"])


def test_balance_domains_samples_each_domain_about_equally():
    @dataclass
    class Item:
        name: str
        domain: str

    items = [Item(f"large{i}", "large") for i in range(17)] + [
        Item(f"small{i}", "small") for i in range(4)
    ]
    balanced = balance_domains(items)
    counts = Counter(item.domain for item in balanced)
    assert counts == {"large": 17, "small": 16}  # each small field 4x (17 / 4 rounds to 4)
    assert [item.name for item in balanced[17:21]] == ["small0"] * 4  # repeated in place
    assert balance_domains(items[:17]) == items[:17]  # one domain: unchanged
    assert balance_domains([]) == []
