"""Chunked segmentation of images of any size: bounded memory, stitched instances.

The image is cut into square *cores* that tile it without overlap. Each core is segmented
inside a window that adds a *halo* on every side (clipped at the image edge), and only
the core's pixels are written, so every pixel is written exactly once.

Stitching (overlap-and-relabel in the halo): cores are written in raster order. Before a
core is written, its window's labels are compared with the labels already written in the
window's part that belongs to each earlier core (left, top-left, top, top-right), one
earlier core at a time. A label L of the window and a written label M are the same object
when, inside that earlier core, each covers at least half of the other's pixels (mutual
majority overlap); L's pixels in the core then get M's id. Every other label gets a new,
globally unique id. When one object was given two ids by earlier cores that did not see
each other, the two ids are united and a last pass rewrites the output with one id per
object.

What this guarantees:

* an object that lies within one window — smaller than the halo, wherever it sits, across
  a border or a corner — is segmented whole in each window that sees it and comes out
  once, with one id;
* an object larger than the halo is still joined across borders as long as the two
  windows agree on the strip they share; where they disagree (the network saw too little
  of it near a window's edge) it may come out as more than one piece. Choose a halo of
  at least the largest object's diameter; :func:`default_halo` uses 2x the model's.

Memory is bounded by one window's segmentation plus the output array's chunk cache; the
image and the output are only read and written window by window (any array-like with
NumPy slicing works: ``np.memmap``, zarr, a lazily read TIFF).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from .memory import release_free_memory
from .progress import Progress, StopCheck, check_stop

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (ends exclusive)

#: Default core side (pixels of the input).
DEFAULT_CHUNK = 2048
#: Least halo (pixels) whatever the model's object size.
MIN_HALO = 64


@dataclass(frozen=True)
class ChunkPlan:
    """How a ``height x width`` frame is cut: cores of side ``chunk`` and a ``halo``."""

    height: int
    width: int
    chunk: int = DEFAULT_CHUNK
    halo: int = MIN_HALO

    def __post_init__(self) -> None:
        if self.chunk < 16 or self.halo < 0:
            raise ValueError(f"chunk must be >= 16 and halo >= 0, got {self.chunk}, {self.halo}")

    @property
    def grid(self) -> tuple[int, int]:
        """Number of core rows and columns."""
        return math.ceil(self.height / self.chunk), math.ceil(self.width / self.chunk)

    def core(self, row: int, col: int) -> Box:
        """The core of grid cell (row, col)."""
        y0, x0 = row * self.chunk, col * self.chunk
        return y0, min(y0 + self.chunk, self.height), x0, min(x0 + self.chunk, self.width)

    def window(self, core: Box) -> Box:
        """The core grown by the halo, clipped to the frame."""
        y0, y1, x0, x1 = core
        h = self.halo
        return max(y0 - h, 0), min(y1 + h, self.height), max(x0 - h, 0), min(x1 + h, self.width)

    def cells(self) -> Iterator[tuple[int, int]]:
        """Grid cells in raster order (the order cores are written)."""
        rows, cols = self.grid
        for row in range(rows):
            for col in range(cols):
                yield row, col

    def earlier_neighbours(self, row: int, col: int) -> list[tuple[int, int]]:
        """Cells written before (row, col) whose cores its window may reach."""
        rows, cols = self.grid
        candidates = [(row, col - 1), (row - 1, col - 1), (row - 1, col), (row - 1, col + 1)]
        return [(r, c) for r, c in candidates if 0 <= r < rows and 0 <= c < cols]


def default_halo(model_diameter: float | None, scale_factor: float = 1.0) -> int:
    """Halo for a model: twice its object diameter in input pixels, at least 64 px."""
    if not model_diameter:
        return MIN_HALO * 2
    return max(MIN_HALO, int(math.ceil(2.0 * model_diameter / max(scale_factor, 1e-6))))


class UnionFind:
    """Disjoint sets of positive integer ids (0 stays 0)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        root = a
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(a, a) != root:  # path compression
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    @property
    def merged(self) -> bool:
        return bool(self.parent)

    def lookup(self, n_ids: int) -> np.ndarray:
        """Array mapping every id ``0..n_ids`` to its set's smallest id."""
        table = np.arange(n_ids + 1, dtype=np.uint32)
        for a in self.parent:
            table[a] = self.find(a)
        return table


@dataclass
class StitchState:
    """Ids given so far and the ids found to be one object."""

    next_id: int = 1
    unions: UnionFind = field(default_factory=UnionFind)
    cores_stitched: int = 0
    objects_joined: int = 0


def match_labels(local: np.ndarray, written: np.ndarray, mask: np.ndarray) -> dict[int, int]:
    """Local label -> written id, for pairs that cover each other's majority in ``mask``.

    Parameters
    ----------
    local : np.ndarray
        The window's labels (int, 0 = background).
    written : np.ndarray
        The output already written over the same window (0 where nothing is written).
    mask : np.ndarray of bool
        Pixels of the window that belong to cores written before.
    """
    a = local[mask].astype(np.int64)
    b = written[mask].astype(np.int64)
    if not a.size:
        return {}
    size_a = dict(zip(*np.unique(a[a > 0], return_counts=True), strict=True))
    size_b = dict(zip(*np.unique(b[b > 0], return_counts=True), strict=True))
    both = (a > 0) & (b > 0)
    if not both.any():
        return {}
    pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    matches: dict[int, int] = {}
    for (la, lb), n in zip(pairs.T, counts, strict=True):
        if 2 * n >= size_a[la] and 2 * n >= size_b[lb]:
            matches.setdefault(int(la), int(lb))
    return matches


def stitch_core(
    local: np.ndarray,
    window: Box,
    core: Box,
    written: np.ndarray,
    earlier: list[Box],
    state: StitchState,
) -> np.ndarray:
    """Global ids (uint32) of ``core`` from the window's local labels.

    ``written`` holds the output over the window; ``earlier`` the cores written before
    that the window overlaps. Updates ``state`` (new ids, unions).
    """
    wy0, _, wx0, _ = window
    matches: dict[int, list[int]] = {}
    for y0, y1, x0, x1 in earlier:  # each earlier core on its own: see the module notes
        mask = np.zeros(local.shape, dtype=bool)
        mask[max(y0 - wy0, 0) : max(y1 - wy0, 0), max(x0 - wx0, 0) : max(x1 - wx0, 0)] = True
        for label, target in match_labels(local, written, mask).items():
            matches.setdefault(label, []).append(target)
    cy0, cy1, cx0, cx1 = core
    core_local = local[cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0]
    present = np.unique(core_local)
    present = present[present > 0]
    table = np.zeros(int(local.max(initial=0)) + 1, dtype=np.uint32)
    for label in present:
        label = int(label)
        if label in matches:
            table[label] = matches[label][0]
            state.objects_joined += 1
        else:
            table[label] = state.next_id
            state.next_id += 1
    # one window object that matched ids of two earlier cores: they are one object
    for targets in matches.values():
        for other in targets[1:]:
            state.unions.union(targets[0], other)
    state.cores_stitched += 1
    return table[core_local]


SegmentWindow = Callable[[Box, Box], Generator[Progress, None, np.ndarray]]


def stitch_iter(
    plan: ChunkPlan,
    segment_window: SegmentWindow | None,
    out: np.ndarray,
    should_stop: StopCheck = None,
    windows: Iterator[tuple[tuple[int, int], np.ndarray]] | None = None,
) -> Generator[Progress, None, StitchState]:
    """Segment every window of ``plan`` and write stitched global ids into ``out``.

    Parameters
    ----------
    plan : ChunkPlan
        The cut of the frame.
    segment_window : callable
        ``segment_window(window_box, core_box)``: a generator (yielding Progress) returning
        the window's local instance labels. Not needed when ``windows`` is given.
    out : array-like
        ``(height, width)`` integer output (uint32 recommended), zero-filled; written core
        by core, read back over windows.
    windows : iterator, optional
        ``((row, col), local_labels)`` in raster order, computed elsewhere (e.g. on dask
        workers); replaces ``segment_window``.
    """
    state = StitchState()
    cells = list(plan.cells())
    for index, (row, col) in enumerate(cells):
        check_stop(should_stop)
        core = plan.core(row, col)
        window = plan.window(core)
        if windows is not None:
            cell, local = next(windows)
            if cell != (row, col):
                raise RuntimeError(f"windows out of order: got {cell}, expected {(row, col)}")
        else:
            local = yield from segment_window(window, core)
        y0, y1, x0, x1 = window
        if local.shape != (y1 - y0, x1 - x0):
            raise ValueError(
                f"window labels have shape {local.shape}, expected {(y1 - y0, x1 - x0)}"
            )
        earlier = [plan.core(r, c) for r, c in plan.earlier_neighbours(row, col)]
        written = np.asarray(out[y0:y1, x0:x1]) if earlier else np.zeros(local.shape, np.uint32)
        labels = stitch_core(local, window, core, written, earlier, state)
        cy0, cy1, cx0, cx1 = core
        out[cy0:cy1, cx0:cx1] = labels
        del local, written, labels
        release_free_memory()  # keeps a long run's peak memory flat (see its notes)
        yield Progress("chunks", index + 1, len(cells), f"{state.next_id - 1} ids")
    if state.unions.merged:
        yield from relabel_iter(plan, out, state.unions.lookup(state.next_id - 1), should_stop)
    return state


def relabel_iter(
    plan: ChunkPlan, out: np.ndarray, table: np.ndarray, should_stop: StopCheck = None
) -> Generator[Progress, None, None]:
    """Rewrite ``out`` core by core through the lookup ``table``."""
    cells = list(plan.cells())
    for index, (row, col) in enumerate(cells):
        check_stop(should_stop)
        y0, y1, x0, x1 = plan.core(row, col)
        out[y0:y1, x0:x1] = table[np.asarray(out[y0:y1, x0:x1])]
        yield Progress("relabel", index + 1, len(cells))


def count_ids(plan: ChunkPlan, out: np.ndarray) -> int:
    """Number of distinct non-zero ids in ``out`` (read core by core)."""
    seen: set[int] = set()
    for row, col in plan.cells():
        y0, y1, x0, x1 = plan.core(row, col)
        ids = np.unique(np.asarray(out[y0:y1, x0:x1]))
        seen.update(int(v) for v in ids if v)
    return len(seen)


def sample_windows(height: int, width: int, side: int = 512, count: int = 16) -> list[Box]:
    """Up to ``count`` windows of ``side`` spread evenly over the frame (all of a small one)."""
    if height * width <= side * side * count:
        return [(0, height, 0, width)]
    per_axis = max(1, int(math.sqrt(count)))
    boxes = []
    for y in np.linspace(0, max(height - side, 0), per_axis).astype(int):
        for x in np.linspace(0, max(width - side, 0), per_axis).astype(int):
            boxes.append((int(y), min(int(y) + side, height), int(x), min(int(x) + side, width)))
    return boxes


def sampled_intensity_range(
    read: Callable[[Box], np.ndarray],
    height: int,
    width: int,
    low: float,
    high: float,
    invert_mode: str = "never",
) -> tuple[tuple[float, float], bool]:
    """Percentile range of grey values over sample windows, and whether to invert.

    ``read(box)`` returns the grey (float) pixels of a window. Never reads the whole of a
    large image: at most 16 windows of 512 x 512.
    """
    samples = [
        np.asarray(read(box), dtype=np.float32).ravel() for box in sample_windows(height, width)
    ]
    values = np.concatenate(samples)
    p_low, p_high = (float(v) for v in np.percentile(values, [low, high]))
    if p_high - p_low <= 1e-6:
        p_low, p_high = float(values.min()), float(values.max())
    span = p_high - p_low if p_high - p_low > 1e-6 else 1.0
    median = float(np.median((values - p_low) / span))
    invert = invert_mode == "always" or (invert_mode == "auto" and median > 0.5)
    return (p_low, p_high), invert


def fixed_options(options, intensity_range: tuple[float, float], invert: bool, diameter):
    """``options`` with one normalisation and one object size for every window."""
    return replace(
        options, intensity_range=intensity_range, invert_frames=invert, diameter=diameter
    )
