"""Out-of-distribution splits: hold out whole domains, never a random share of one.

A random split of one data set puts images of the same lab, microscope, tissue field or
time-lapse into both training and validation, so it measures how well a model knows its
own data, not how it does on a new lab's images. The functions here assign whole
*groups* (a domain, a field, a sequence, a block of frames) to one part only, and are
deterministic: the same names, groups and seed always give the same split.

Group keys for the shared data sets are built by :func:`dsb2018_domain`,
:func:`bitdepth_tissue` / :func:`bitdepth_objective`, :func:`usiigaci_acquisition` and
:func:`time_blocks`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = [
    "Fold",
    "balance_domains",
    "bitdepth_objective",
    "bitdepth_tissue",
    "check_no_leak",
    "dsb2018_domain",
    "grouped_split",
    "leave_one_group_out",
    "time_blocks",
    "usiigaci_acquisition",
    "usiigaci_ood_split",
]

#: a training item with a ``domain`` attribute
T = TypeVar("T")


@dataclass(frozen=True)
class Fold:
    """One leave-one-group-out fold: the held-out group, its names, everything else."""

    held_out: str
    train: tuple[str, ...]
    test: tuple[str, ...]


def _groups_of(names: Sequence[str], group_of: Callable[[str], str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        groups.setdefault(str(group_of(name)), []).append(name)
    return groups


def grouped_split(
    names: Sequence[str],
    group_of: Callable[[str], str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    parts: Sequence[str] = ("train", "val", "test"),
) -> dict[str, list[str]]:
    """Split ``names`` into ``parts`` with every group wholly in one part.

    Groups are shuffled with ``seed`` (a permutation of their sorted keys) and dealt to
    the parts in order until each part holds about its ``fraction`` of the *names*; every
    part but the first gets at least one group when there are enough.

    Parameters
    ----------
    names : sequence of str
        Item names (duplicates are ignored).
    group_of : callable
        Name -> group key (e.g. :func:`bitdepth_tissue`).
    fractions : sequence of float
        Wanted share of the names per part (normalised to sum 1).
    seed : int
        Seed of the group permutation.
    parts : sequence of str
        Part names, as many as ``fractions``.

    Returns
    -------
    dict
        ``part -> sorted names``.
    """
    if len(fractions) != len(parts):
        raise ValueError(f"{len(fractions)} fractions for {len(parts)} parts")
    if any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum: {fractions}")
    groups = _groups_of(names, group_of)
    keys = sorted(groups)
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    total = sum(len(groups[k]) for k in keys)
    wanted = np.asarray(fractions, dtype=float) / float(sum(fractions)) * total
    out: dict[str, list[str]] = {part: [] for part in parts}
    # the small parts (val, test) first, so they are never starved by a big first part
    fill_order = list(range(1, len(parts))) + [0]
    queue = list(order)
    for index in fill_order[:-1]:
        while queue and len(out[parts[index]]) < wanted[index]:
            if out[parts[index]] and len(queue) <= 1:
                break  # keep the last group for the first part
            out[parts[index]].extend(groups[queue.pop(0)])
    for key in queue:
        out[parts[0]].extend(groups[key])
    return {part: sorted(values) for part, values in out.items()}


def leave_one_group_out(names: Sequence[str], group_of: Callable[[str], str]) -> list[Fold]:
    """One fold per group (sorted by key): test = that group, train = all the others."""
    groups = _groups_of(names, group_of)
    folds = []
    for key in sorted(groups):
        train = tuple(
            n for other, members in sorted(groups.items()) if other != key for n in members
        )
        folds.append(Fold(key, tuple(sorted(train)), tuple(groups[key])))
    return folds


def check_no_leak(split: dict[str, Iterable[str]], group_of: Callable[[str], str]) -> None:
    """Raise ValueError if a name or a group appears in more than one part."""
    seen: dict[str, str] = {}
    names_seen: dict[str, str] = {}
    for part, names in split.items():
        for name in names:
            if name in names_seen and names_seen[name] != part:
                raise ValueError(f"{name!r} is in both {names_seen[name]!r} and {part!r}")
            names_seen[name] = part
            group = str(group_of(name))
            if group in seen and seen[group] != part:
                raise ValueError(
                    f"group {group!r} leaks: {name!r} is in {part!r}, "
                    f"another of its images in {seen[group]!r}"
                )
            seen[group] = part


def time_blocks(n_frames: int, n_blocks: int, gap: int = 0) -> list[list[int]]:
    """Split frames ``0..n_frames-1`` of a time-lapse into contiguous blocks.

    Neighbouring frames are nearly the same image, so validation frames must come from a
    block far from the training frames: ``gap`` frames between consecutive blocks are
    left out of every block.

    Returns
    -------
    list of list of int
        ``n_blocks`` lists of frame indices, in time order.
    """
    if n_blocks < 1 or gap < 0:
        raise ValueError("n_blocks must be >= 1 and gap >= 0")
    usable = n_frames - gap * (n_blocks - 1)
    if usable < n_blocks:
        raise ValueError(f"{n_frames} frames cannot hold {n_blocks} blocks with {gap}-frame gaps")
    sizes = [usable // n_blocks + (1 if i < usable % n_blocks else 0) for i in range(n_blocks)]
    blocks, start = [], 0
    for size in sizes:
        blocks.append(list(range(start, start + size)))
        start += size + gap
    return blocks


_BITDEPTH = re.compile(r"^(?P<objective>[^_]+(?:_(?:air|oil))?)__(?P<tissue>[a-z]+)_")


def _bitdepth_parts(name: str) -> re.Match:
    match = _BITDEPTH.match(name.rsplit("/", 1)[-1])
    if match is None:
        raise ValueError(f"not a BitDepth file name (<objective>__<tissue>_...): {name!r}")
    return match


def bitdepth_tissue(name: str) -> str:
    """Tissue of a BitDepth image (``"40x_air__heart_40x_air_2.tif"`` -> ``"heart"``).

    The same tissue fields are imaged with every objective, so a leak-free split holds a
    tissue out with all its objectives (then scores each objective of it separately).
    """
    return _bitdepth_parts(name)["tissue"]


def bitdepth_objective(name: str) -> str:
    """Objective of a BitDepth image (``"63x_oil__liver_63x_oil_2.tif"`` -> ``"63x_oil"``)."""
    return _bitdepth_parts(name)["objective"]


def dsb2018_domain(row: dict[str, str]) -> str:
    """Acquisition domain of a DSB2018 image from its ``metadata.csv`` row: the image
    type heuristic and the frame size (which in DSB2018 follows the lab and microscope),
    e.g. ``"fluorescence_like/520x696"``."""
    return f"{row['heuristic_type']}/{row['height']}x{row['width']}"


#: Usiigaci training fields of the second acquisition: cells ~41 px across (median
#: equivalent diameter) and brighter frames (99th percentile 55-64k), against ~68 px and
#: 43-50k in the other fields. Measured on the shared copy's masks and images (docs/models.md).
_USIIGACI_SMALL_CELL_FIELDS = frozenset({13, 14, 15, 16, 19, 20})
_USIIGACI_FIELD = re.compile(r"(?P<part>train|val)_set(?P<field>\d+)")


def usiigaci_acquisition(name: str) -> str:
    """Acquisition of a Usiigaci field (``"train_set14.tif"`` -> ``"usiigaci/small-cells"``).

    The repository's training fields come from two acquisitions that differ in cell size
    (~68 px against ~41 px) and brightness; its own validation fields 46-50 form a third
    group (``"usiigaci/repo-val"``), kept for testing. A validation split that holds out
    fields of one acquisition only cannot see how a model does on the other.
    """
    field = _usiigaci_field(name)
    if "val_set" in name.rsplit("/", 1)[-1]:
        return "usiigaci/repo-val"
    small = field in _USIIGACI_SMALL_CELL_FIELDS
    return "usiigaci/small-cells" if small else "usiigaci/large-cells"


def _usiigaci_field(name: str) -> int:
    match = _USIIGACI_FIELD.search(name.rsplit("/", 1)[-1])
    if match is None:
        raise ValueError(f"not a Usiigaci field name (train_setN / val_setN): {name!r}")
    return int(match["field"])


def usiigaci_ood_split(names: Sequence[str], val_per_acquisition: int = 2) -> dict[str, list[str]]:
    """Train / val / test of the Usiigaci fields with every acquisition in validation.

    The last ``val_per_acquisition`` fields (by number) of each training acquisition
    validate, the other training fields train, and the repository's own validation
    fields (46-50) test. Whole fields only, so no field is in two parts.
    """
    by_group: dict[str, list[str]] = {}
    for name in names:
        by_group.setdefault(usiigaci_acquisition(name), []).append(name)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for group, members in sorted(by_group.items()):
        members = sorted(members, key=_usiigaci_field)
        if group == "usiigaci/repo-val":
            split["test"] += members
            continue
        if len(members) <= val_per_acquisition:
            raise ValueError(f"{group} has {len(members)} fields: too few to hold some out")
        split["train"] += members[:-val_per_acquisition]
        split["val"] += members[-val_per_acquisition:]
    return {part: sorted(found, key=_usiigaci_field) for part, found in split.items()}


def balance_domains(items: Sequence[T]) -> list[T]:
    """Repeat each training item so that every domain is sampled about equally often.

    Training draws images uniformly, so a domain with a quarter of the images gets a
    quarter of the steps. Each item of a domain with ``n`` images is listed
    ``round(largest / n)`` times, ``largest`` being the biggest domain's image count.
    Items without a domain (``""``) form one domain.

    Parameters
    ----------
    items
        Training items with a ``domain`` attribute (e.g. ``LabelledImage``).

    Returns
    -------
    list
        The items in their order, each repeated in place.
    """
    counts = Counter(item.domain for item in items)
    largest = max(counts.values(), default=0)
    return [item for item in items for _ in range(max(1, round(largest / counts[item.domain])))]
