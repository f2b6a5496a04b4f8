"""ColourMLP: the classic 3-5-2-1 sigmoid network that picks a text colour for a background.

Input: an RGB background colour, three numbers in [0, 1] (gamma-encoded sRGB,
as stored in an image). Output: the probability that *black* text reads better
on it than white text (1 = write black, 0 = write white).

It subclasses ``nn.Sequential`` so that its forward is exactly its children in
order, which is what reportgen's numeric trace expects; the names are the ones
the trace page shows.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class ColourMLP(nn.Sequential):
    """Linear(3, 5) - Sigmoid - Linear(5, 2) - Sigmoid - Linear(2, 1) - Sigmoid."""

    def __init__(self):
        super().__init__(OrderedDict([
            ("hidden1", nn.Linear(3, 5)),
            ("act1", nn.Sigmoid()),
            ("hidden2", nn.Linear(5, 2)),
            ("act2", nn.Sigmoid()),
            ("out", nn.Linear(2, 1)),
            ("act_out", nn.Sigmoid()),
        ]))
