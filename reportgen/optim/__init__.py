"""Optimising inputs for units of a network.

``receptive``: receptive field of a layer's units (size, jump, start).
``maximise``: batched activation maximisation (plain gradient ascent and the
regularised Fourier-parameterised version).
"""
