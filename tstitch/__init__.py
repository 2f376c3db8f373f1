"""tstitch: trajectory stitching (T-Stitch, Pan et al. 2024) for diffusion models."""
from tstitch.data import seeds
from tstitch.models.zoo import load
from tstitch.sampling.pipeline import Pipeline, pipeline
from tstitch.sampling.sample import Result, sample

__all__ = ["Pipeline", "Result", "load", "pipeline", "sample", "seeds"]
