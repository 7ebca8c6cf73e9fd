"""napari plugin of segloop: dock widgets, reader, writer and sample data.

Kept light on purpose: importing this package (which napari does when it discovers the
plugin) imports neither Qt widgets nor torch. The widgets live in ``_segment_widget``,
``_weightmap_widget``, ``_count_widget`` and ``_finetune_widget``; torch is imported when a
model is first used.
"""

__all__ = ["CountWidget", "FinetuneWidget", "SegmentWidget", "WeightMapWidget"]


def __getattr__(name: str):
    if name == "SegmentWidget":
        from ._segment_widget import SegmentWidget

        return SegmentWidget
    if name == "WeightMapWidget":
        from ._weightmap_widget import WeightMapWidget

        return WeightMapWidget
    if name == "CountWidget":
        from ._count_widget import CountWidget

        return CountWidget
    if name == "FinetuneWidget":
        from ._finetune_widget import FinetuneWidget

        return FinetuneWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
