"""Qt-free engine of segloop: models, targets, tiling, prediction, training, metrics, IO.

Modules here import only numpy, scipy, scikit-image, torch, safetensors, tifffile and
Pillow; never Qt, napari or magicgui (``tests/core/test_no_gui_imports.py`` checks this).
"""
