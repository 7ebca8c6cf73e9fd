"""Exponential moving average (EMA) of a network's weights during training.

The average is what gets validated, checkpointed and kept: it smooths the noise of
small-batch steps on a few corrected frames. Batch-norm running statistics are averaged
like the weights; integer buffers (batch counters) follow the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """An EMA of ``network``'s state, with the usual warm-up of the decay.

    Parameters
    ----------
    network : torch.nn.Module
        The network being trained; its current state is the average's start.
    decay : float
        The decay after warm-up, in (0, 1). Step ``t`` uses
        ``min(decay, (1 + t) / (10 + t))`` so that the first steps are not averaged with
        the start weights for thousands of steps.
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in network.state_dict().items()}

    def update(self, network: torch.nn.Module) -> None:
        """Move the average towards ``network``'s current state (call after each step)."""
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        with torch.no_grad():
            for key, value in network.state_dict().items():
                average = self.state[key]
                if average.is_floating_point():
                    average.lerp_(value.detach(), 1.0 - decay)
                else:
                    average.copy_(value)


@contextmanager
def averaged_weights(
    network: torch.nn.Module, average: WeightAverage | None
) -> Iterator[torch.nn.Module]:
    """Run the body with ``average``'s weights in ``network``, then put the trained
    weights back (even on an exception). With no average this does nothing."""
    if average is None:
        yield network
        return
    trained = {k: v.detach().clone() for k, v in network.state_dict().items()}
    network.load_state_dict(average.state)
    try:
        yield network
    finally:
        network.load_state_dict(trained)
