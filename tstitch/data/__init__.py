"""Data: seeds (every sample a function of its seed), prompt sets, image sets on disk, and the toy zoo's data and
shipped weights (``toy/``)."""
