"""Optimizer parameter groups: the encoder may learn slower than the rest, or not at all.

Fine-tuning on two corrected frames can over-fit the features a start model learned on
hundreds of images; a smaller learning rate for the encoder (the contracting path)
keeps them closer to the start. A factor of 0 freezes the encoder, which also skips
its weight gradients. :class:`StartAnchor` instead pulls every weight back towards its
start value after each step (L2-SP, Li et al. 2018, in AdamW's decoupled form).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["StartAnchor", "encoder_of", "parameter_groups", "frozen_encoder", "training_mode"]


def encoder_of(network: nn.Module) -> nn.Module:
    """The contracting path of a U-Net (``down``) or SegNet (``encoder``).

    Parameters
    ----------
    network : torch.nn.Module
        A segloop U-Net or SegNet.

    Returns
    -------
    torch.nn.Module
        The module list of its encoder blocks (the U-Net's includes the bottleneck).

    Raises
    ------
    ValueError
        If the network has neither.
    """
    for name in ("down", "encoder"):
        module = getattr(network, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"{type(network).__name__} has no encoder ('down' or 'encoder')")


def parameter_groups(network: nn.Module, encoder_lr_factor: float) -> list[dict]:
    """Optimizer groups, each with an ``lr_factor`` that scales the scheduled rate.

    Parameters
    ----------
    network : torch.nn.Module
        The network being trained.
    encoder_lr_factor : float
        Share of the learning rate the encoder's parameters get (the rest get 1). With 0
        they are left out of the optimizer (see :func:`frozen_encoder`).

    Returns
    -------
    list of dict
        ``{"params": [...], "lr_factor": f}`` groups for a ``torch.optim`` optimizer.
    """
    if encoder_lr_factor == 1.0:
        return [{"params": list(network.parameters()), "lr_factor": 1.0}]
    encoder = list(encoder_of(network).parameters())
    encoder_ids = {id(p) for p in encoder}
    rest = [p for p in network.parameters() if id(p) not in encoder_ids]
    groups = [{"params": rest, "lr_factor": 1.0}]
    if encoder_lr_factor > 0:
        groups.append({"params": encoder, "lr_factor": encoder_lr_factor})
    return groups


@contextmanager
def frozen_encoder(network: nn.Module, freeze: bool) -> Iterator[None]:
    """Turn off the encoder's weight gradients while training (restored afterwards,
    also on an error or when the training generator is closed early).

    Parameters
    ----------
    network : torch.nn.Module
        The network being trained.
    freeze : bool
        False makes this a no-op.

    Only the weights are frozen: the encoder's batch-norm layers stay in training mode
    and their running statistics follow the training images.
    """
    if not freeze:
        yield
        return
    parameters = list(encoder_of(network).parameters())
    before = [p.requires_grad for p in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(parameters, before, strict=True):
            parameter.requires_grad_(flag)


def training_mode(network: nn.Module, freeze_batchnorm: bool) -> nn.Module:
    """Put ``network`` in training mode, its batch-norm layers too unless
    ``freeze_batchnorm``: then they normalise with the running statistics the start model
    learned and leave them unchanged (their scale and shift still learn), as
    detectron2's FrozenBatchNorm does for small fine-tuning batches.

    Parameters
    ----------
    network : torch.nn.Module
        The network being trained.
    freeze_batchnorm : bool
        Keep the batch-norm layers in evaluation mode.

    Returns
    -------
    torch.nn.Module
        ``network``.
    """
    network.train()
    if freeze_batchnorm:
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    return network


class StartAnchor:
    """Decay towards the start weights (decoupled L2-SP), on top of the optimizer's own
    weight decay towards zero.

    After each optimizer step, :meth:`pull` moves every trained parameter ``p`` by
    ``-lr * strength * (p - p_start)``, with ``lr`` its group's current learning rate
    (a decoupled decay, as AdamW's, but applied after the step, so it also takes back a
    share of that step). The weights may move as far as the corrections ask, but each
    step takes back a share of the way they have gone. Every parameter is anchored, a
    layer new to this run (e.g. a distance head just added) to its initial values.

    Parameters
    ----------
    network : torch.nn.Module
        The network about to be trained; its current parameters are the anchor.
    strength : float
        The decay's coefficient (> 0); ``lr * strength`` is the share taken back per
        step (capped at 1).
    """

    def __init__(self, network: nn.Module, strength: float) -> None:
        if not strength > 0:
            raise ValueError(f"the anchor's strength must be > 0, not {strength}")
        self.strength = float(strength)
        self.start = {id(p): p.detach().clone() for p in network.parameters()}

    def pull(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply one step of the decay to the parameters ``optimizer`` trains."""
        with torch.no_grad():
            for group in optimizer.param_groups:
                share = min(1.0, group["lr"] * self.strength)
                for parameter in group["params"]:
                    if parameter.requires_grad:
                        parameter.lerp_(self.start[id(parameter)], share)
