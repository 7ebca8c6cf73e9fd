"""napari plugin of segloop: dock widgets, reader, writer and sample data.

Kept light on purpose: importing this package (which napari does when it discovers the
plugin) imports neither Qt widgets nor torch. The widgets live in ``_segment_widget``,
``_weightmap_widget`` and ``_count_widget``; torch is imported when a model is first used.
"""

__all__ = ["CountWidget", "SegmentWidget", "WeightMapWidget"]


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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
