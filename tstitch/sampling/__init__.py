"""Sampling: the solvers (pure functions of a denoiser callable), stitching as a denoiser combinator, guidance, the
per-seed Gaussian noise, ``sample`` (one batch of an allocation) and the text-to-image ``pipeline``."""
