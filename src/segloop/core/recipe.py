"""The correct-and-retrain recipe's defaults, in one torch-free place.

The Fine-tune widget (which must not import torch when napari starts), ``segloop
finetune``, ``segloop train --init`` and the benchmarks all read them from here;
:func:`segloop.core.finetune.recipe_config` turns them into a ``TrainConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``FinetuneRequest.start`` value that trains a new network instead of fine-tuning.
SCRATCH = "scratch"
#: ``FinetuneRequest.start`` value that starts from the shipped model that segments the
#: corrections best before training (:mod:`segloop.core.start_choice`).
AUTO_START = "auto"
ARCHITECTURES = ("unet", "segnet", "unet-classic")
TARGETS = ("instances", "classes")


@dataclass(frozen=True)
class Defaults:
    """Every default of the recipe (see docs/benchmarks.md for how each was chosen)."""

    #: learning rate when fine-tuning a model and when training from scratch. Picked on
    #: E. coli frames (docs/benchmarks.md); checked across 7 modalities (2 frames, 120 s,
    #: 2026-12-06) against 3e-4 and 2e-3: leaving one modality out flips between those
    #: two and their left-out median (0.517) is below 1e-3's (0.555), so it stays
    learning_rate: float = 1e-3
    learning_rate_scratch: float = 1e-3
    #: training budget in minutes when neither minutes nor epochs are given
    minutes: float = 2.0
    #: seconds between validation checks during training
    val_interval_s: float = 30.0
    #: share of corrections held out for validation by default (0: none; the user picks
    #: validation corrections explicitly). Chosen leaving one modality out
    #: (benchmarks/finetune_modalities.py, 7 modalities, 2 corrected frames, 120 s):
    #: training on both with 128 px crops and tuning post-processing on them against the
    #: old recipe (one held out, 256 px): median SEG 0.507 vs 0.488, picked for 4 of the
    #: 7 left-out modalities; a weak preference, with no collapse (H&E: 0.51 vs 0.08).
    #: Those versions were scored at native scale. Since `nuclei` predicts with
    #: `diameter: auto`, and with the size check below, the recipe gives a median SEG of
    #: 0.530 (one run, 2026-12-06; docs/benchmarks.md).
    val_fraction: float = 0.0
    #: with nothing held out, validate and tune post-processing on the training
    #: corrections themselves (in-sample) rather than not tuning
    tune_on_training: bool = True
    #: replay images of the start model per training correction (0 disables replay;
    #: only ``nuclei`` ships replay images). 1.0 had been picked on E. coli frames alone.
    #: Checked across the four modalities that start from ``nuclei``, three seeds (two
    #: for 0) each (benchmarks/finetune_modalities.py, 2 frames, 120 s, 2026-12-07):
    #: mean SEG on the new modality 0.567 / 0.599 / 0.612 for 1.0 / 0.5 / 0; SEG on the
    #: 6 validation images ``nuclei`` ships 0.682 / 0.626 / 0.460. Leaving one modality
    #: out on SEG alone picks 0 for all four, 0.013 ahead of 0.5 (inside the run-to-run
    #: spread), and 0.5 over 1.0 for all four; 0.5 keeps most of what the start model
    #: knew, so it is the default
    replay_fraction: float = 0.5
    #: training crop side: 128 px crops give 3-4x the steps per minute of 256 px ones at
    #: the same pixels per second (same benchmark)
    crop: int = 128
    batch_size: int = 4
    #: weight of a soft Dice term added to the weighted cross-entropy when fine-tuning
    #: (training from scratch: ``dice_weight_scratch``). Chosen leaving one modality out
    #: (benchmarks/finetune_modalities.py, 7 modalities, 2 corrected frames, 500 steps,
    #: seeds 0-2, 2026-12-07): median of the seed means 0.603 against 0.555 without it,
    #: picked for 6 of the 7 left-out modalities (ISBI EM, the one it gains most on,
    #: picks the old recipe by 0.006); EM +0.05, Fluo-N2DL-HeLa +0.02, DIC-HeLa +0.01,
    #: MICCAI H&E -0.01, E. coli (erratic either way) -0.04. Weights 0.5 and 2 (same
    #: benchmark, 2026-12-07): medians 0.589 and 0.595; the weights leaving one modality
    #: out picks score 0.595 on the left-out ones, keeping 1 scores 0.603
    dice_weight: float = 1.0
    #: the same term when training a new network (Train from scratch, ``segloop train``
    #: without ``--init``). Chosen on far-apart time blocks of DIC-HeLa seq 01 never
    #: trained on (benchmarks/dic_hela.py, 5 min, seeds 0-1, 2026-12-07; CTC SEG on the
    #: gold / silver frames of the held-out block): with the term 0.884 / 0.903 and
    #: 0.792 / 0.886 (block t047-t074), 0.894 / 0.896 and 0.900 / 0.928 (t000-t027),
    #: against 0.881 / 0.882, 0.776 / 0.838, 0.716 / 0.724 and 0.867 / 0.883 without;
    #: better in all four pairs, mean SEG 0.867 / 0.903 against 0.810 / 0.832
    dice_weight_scratch: float = 1.0
    #: post-processing grid tuned on the check images after training ("quick": seconds)
    tune_grid: str = "quick"
    #: when that tuning is in-sample (on the corrections just trained on), keep the start
    #: model's post-processing unless the tuned settings outline the corrections better
    #: (higher SEG; the search itself maximises F1 - count error, which in-sample
    #: overrates settings fitted to them). Chosen leaving one modality out on the
    #: same trained versions post-processed four ways (benchmarks/retune_rules.py on the
    #: shipped recipe's 1- and 2-frame, 120 s versions, 2026-12-06): against always
    #: tuning, never tuning and adding SEG to the search's score, it has the best median
    #: SEG on the other modalities for all 7 left-out ones; median SEG 0.560 vs 0.530
    #: for always tuning (2 frames), 0.553 vs 0.553 (1 frame), mean 0.486 vs 0.446 and
    #: 0.494 vs 0.466.
    tune_keep_current: bool = True
    #: ... by more than this much pooled SEG when the tuned settings drop more objects
    #: than the start's (a higher foreground threshold, minimum size or ``min_peak``;
    #: ``evaluation.drops_more``). In-sample SEG gains below 0.03 foretold nothing off
    #: the corrections, and such stricter settings lost up to 0.27 SEG there (Usiigaci:
    #: ``min_peak`` 0.65). Chosen leaving one modality out on 89 kept fine-tuned versions
    #: (nuclei start, 7 modalities, 1-2 frames, 60-300 s, four recipes;
    #: benchmarks/retune_margin.py, 2026-12-06): 0.03 for 4 of the 7 left-out
    #: modalities, 0.05 for the other 3, always for stricter settings only (a tie within
    #: 0.002 with a margin on any settings there; on a `cells`-start DIC-HeLa version
    #: looser tuned settings gained 0.146 out of sample for 0.009 in-sample). Median of
    #: the left-out modalities' mean SEG 0.450 against 0.430 with no margin.
    tune_keep_margin: float = 0.03
    #: most class ids a new class model may have (more means the labels are instances)
    max_classes: int = 20
    #: a new instance model (``segloop train`` without ``--init``, Train from scratch)
    #: also learns each pixel's distance to its object's edge and seeds touching objects
    #: from it. Chosen on a far-apart time block of DIC-HeLa seq 01 never trained on
    #: (benchmarks/dic_hela.py, docs/benchmarks.md), CTC SEG on its silver / gold frames:
    #: 5 min 0.833 / 0.828 with the head vs 0.738 / 0.808 without (block t047-t074) and
    #: 0.875 / 0.865 vs 0.774 / 0.741 (block t000-t027); 15 min 0.870 / 0.888 vs 0.871 /
    #: 0.889 (t047-t074; a tie, F1@0.5 0.924 vs 0.897)
    distance_head: bool = True
    #: A version that inherits ``diameter: auto`` predicts at its corrections' scale
    #: instead when that scores more than this much better F1@0.5 on the check
    #: corrections (``size_check``; None: never). Chosen leaving one modality out
    #: (benchmarks/finetune_modalities.py, 2026-12-06, versions trained without the
    #: in-sample tuning): checking beats never checking on the median of the other
    #: modalities for every modality but EM (a tie), and fixes EM (SEG 0.03 -> 0.46;
    #: `auto` merges cells whose sizes vary). Margins 0 and 0.1 tie; 0.1 keeps `auto`
    #: unless the corrections clearly disagree. In the shipped recipe's run it switched
    #: EM (SEG 0.56) and MICCAI H&E (0.30).
    size_check_margin: float | None = 0.1


DEFAULTS = Defaults()
