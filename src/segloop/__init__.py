"""napari-segloop: segment, count, correct and retrain U-Net cell segmentation."""

__version__ = "0.1.0"
