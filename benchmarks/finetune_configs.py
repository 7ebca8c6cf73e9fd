"""The recipes ``finetune_modalities.py`` compares, by name (``--configs``).

Each maps to ``build_request`` options (None = the service's default): ``TrainConfig``
fields, plus a few the benchmark handles itself (``tune_on_training``, ``zoom``,
``augment``, ``start_diameter_times``, ``rescale_to_start``). Rows in docs/results/ carry
these names, so a name that has been run keeps its meaning.
"""

from __future__ import annotations

BLUR_NOISE = {"blur_probability": 0.25, "poisson_probability": 0.25}
SEEDS = [("", {}), ("-seed1", {"seed": 1}), ("-seed2", {"seed": 2})]

CONFIGS: dict[str, dict] = {
    # the widget's recipe before issue #19: 256 px crops, one of two corrections held out
    # to validate and to tune post-processing on the full grid
    "today": {
        "crop": 256,
        "batch_size": 4,
        "tune_grid": "full",
        "val_fraction": 0.2,
        "tune_on_training": False,
    },
    "crop128": {"crop": 128, "batch_size": 4, "val_fraction": 0.2, "tune_on_training": False},
    "crop128-all": {"crop": 128, "batch_size": 4, "val_ids": [], "tune_on_training": True},
    "default": {},  # whatever segloop.core.recipe.DEFAULTS says now
    "nodice": {"dice_weight": 0.0},  # the default before the Dice term (2026-12-07)
    # the default without tuning post-processing on the corrections (nor the size check)
    "notune": {"tune_on_training": False},
    # the default with half the crops of each correction centred on an object pixel
    "objcrop": {"object_crops": 0.5},
    # the default with another learning rate (lr 1e-3 was picked on E. coli frames alone)
    "lr3e-4": {"learning_rate": 3e-4},
    "lr2e-3": {"learning_rate": 2e-3},
    # the default with another training seed (run-to-run spread)
    "seed1": {"seed": 1},
    "seed2": {"seed": 2},
    # replay images of the start model per correction: 1.0 (the default until
    # 2026-12-07, picked on E. coli frames alone), 0.5 (the default since), 0
    **{f"replay1{s}": {"replay_fraction": 1.0, **x} for s, x in SEEDS},
    **{f"replay0.5{s}": {"replay_fraction": 0.5, **x} for s, x in SEEDS},
    **{f"replay0{s}": {"replay_fraction": 0.0, **x} for s, x in SEEDS},
    # corrections whose objects are larger than the native range are trained at twice the
    # start model's diameter (not beyond their own size) instead of at its diameter
    # (with the replay of the day it ran)
    "d2x": {"start_diameter_times": 2.0, "replay_fraction": 1.0},
    # the default with zoom augmentation (each crop resized 0.7-1.4x, log-uniform), so
    # that two corrected frames also teach cells a little larger and smaller than theirs
    **{f"zoom{s}": {"zoom": (0.7, 1.4), **x} for s, x in SEEDS},
    "default-seed1": {"seed": 1},
    # the default stopped after a fixed number of steps (run with a budget long enough
    # that the steps decide): the same training whatever the machine's speed or load;
    # with an exponential moving average of the weights kept (core.ema)
    **{f"steps500{s}": {"epochs": 500, **x} for s, x in SEEDS},
    "ema-steps500": {"epochs": 500, "ema_decay": 0.998},
    # the encoder learning at a tenth of the rate, or frozen (core.param_groups)
    **{
        f"enc{f:g}-steps500{s}": {"epochs": 500, "encoder_lr_factor": f, **x}
        for f in (0.1, 0.0)
        for s, x in SEEDS[:2]
    },
    # two of the shift augmentations the shipped models train with (defocus blur, shot
    # noise; not inversion or zoom) added to the fine-tune's
    **{f"blur-noise-steps500{s}": {"epochs": 500, "augment": BLUR_NOISE, **x} for s, x in SEEDS},
    # pseudo-labels on frames nobody corrected (unlabelled_frames.py); a soft Dice term
    # on top of the weighted cross-entropy; no U-Net weight map
    **{f"pseudo-steps500{s}": {"epochs": 500, "unlabelled_weight": 1.0, **x} for s, x in SEEDS},
    **{f"dice-steps500{s}": {"epochs": 500, "dice_weight": 1.0, **x} for s, x in SEEDS},
    **{f"nowm-steps500{s}": {"epochs": 500, "weight_map": False, **x} for s, x in SEEDS},
    **{
        f"dice-nowm-steps500{s}": {"epochs": 500, "weight_map": False, "dice_weight": 1.0, **x}
        for s, x in SEEDS
    },
    # the soft Dice term at half, twice and four times the default's weight (1.0)
    **{
        f"dice{w:g}-steps500{s}": {"epochs": 500, "dice_weight": w, **x}
        for w in (0.5, 2.0, 4.0)
        for s, x in SEEDS
    },
    # half the crops of each correction centred on a pixel the start model gets wrong
    **{f"errcrop-steps500{s}": {"epochs": 500, "error_crops": 0.5, **x} for s, x in SEEDS},
    # batch-norm layers keep the start model's running statistics while fine-tuning
    **{f"frozenbn-steps500{s}": {"epochs": 500, "freeze_batchnorm": True, **x} for s, x in SEEDS},
    # the corrections (and replay images) rescaled to the start model's diameter even when
    # their objects are inside the native range, so the version keeps the start's scale
    # (a no-op for starts trained rescaled, such as cells and ecoli)
    **{f"rescale-steps500{s}": {"epochs": 500, "rescale_to_start": True, **x} for s, x in SEEDS},
    # every weight decays towards the start model's instead of towards zero (L2-SP in
    # AdamW's decoupled form, core.param_groups.StartAnchor)
    **{f"anchor10-steps500{s}": {"epochs": 500, "start_decay": 10.0, **x} for s, x in SEEDS},
}
