"""tstitch: trajectory stitching (T-Stitch, Pan et al. 2024) for diffusion models."""
from tstitch import seeds
from tstitch.pipeline import Pipeline, pipeline
from tstitch.sample import Result, sample
from tstitch.zoo import load

__all__ = ["Pipeline", "Result", "load", "pipeline", "sample", "seeds"]
