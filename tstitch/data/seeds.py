"""Per-sample randomness: sample i is a function of its seed alone (NVlabs/edm style), so any batch size,
GPU count, restart or stitch configuration reproduces it, and sweeps over fractions are paired."""
import operator
from collections.abc import Iterable, Sequence

import torch

from tstitch.errors import ConfigError

SEED_MAX = 2 ** 64 - 1  # a torch.Generator's range; a negative seed would alias a large one (-1 is 2**64 - 1)


def check(seeds: Iterable) -> list[int]:
    """``seeds`` as a list of ints, each in [0, 2**64 - 1]; anything else (a float, a bool, a negative or larger
    number, a single int instead of a list) is one ConfigError line."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ConfigError(f"seeds must be a list of ints, not {type(seeds).__name__}; e.g. seeds=range(4) or [7]")
    out = []
    for s in seeds:
        try:
            value = None if isinstance(s, bool) else operator.index(s)  # ints, numpy and 0-d integer tensors
        except TypeError:
            value = None
        if value is None or not 0 <= value <= SEED_MAX:
            raise ConfigError(f"seed {s!r} is not allowed: give integers in [0, 2**64 - 1] (a torch.Generator's "
                              "seeds)")
        out.append(value)
    return out


class SeedNoise:
    """One ``torch.Generator`` per sample. Draw order per seed: initial noise, then the class label, then the
    unconditional input of each member that draws one (LDM, ``null_draws``; in member order), then whatever a
    stochastic solver asks for through ``randn_like``."""

    def __init__(self, seeds: Iterable[int], device: str | torch.device = "cpu"):
        self.generators = [torch.Generator(device).manual_seed(s) for s in check(seeds)]
        self.device = device

    def randn(self, shape: tuple, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        return torch.stack([torch.randint(high, (), generator=g, device=self.device) for g in self.generators])

    def __getitem__(self, index):
        """The generators of a slice of the samples (a batch), sharing their state."""
        sub = SeedNoise([], self.device)
        sub.generators = self.generators[index]
        return sub

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)


def generators(randn_like):
    """The per-sample generators behind ``randn_like`` when it is a ``SeedNoise``'s (for samplers that draw their
    own noise, such as diffusers schedulers, which take them as a ``generator`` list); None for any other
    (``torch.randn_like``: torch's global generator)."""
    owner = getattr(randn_like, "__self__", None)  # a bound method's object
    return owner.generators if isinstance(owner, SeedNoise) else None


def draw(seeds: Iterable[int], shape: tuple, num_classes: int | None, labels: str = "random",
         device: str | torch.device = "cpu", prompts: Sequence[str] | None = None,
         base_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | list[str], SeedNoise]:
    """Initial noise, conditions and the per-sample noise source for ``seeds``.

    Class-conditional members: ``labels="random"``: uniform from each seed's generator (as DiT); ``"balanced"``:
    seed % num_classes. Text-conditioned members (``num_classes`` None): the prompt of each seed from the list
    ``prompts`` (``tstitch.data.prompts.assign``: seed ``base_seed + i`` gets prompt i mod its length).
    """
    seeds = check(seeds)
    if not seeds:
        raise ConfigError("no seeds given; give one or more, e.g. seeds=range(4)")
    rng = SeedNoise(seeds, device)
    x = rng.randn(tuple(shape))
    if num_classes is None:
        if not prompts:
            raise ConfigError("text-conditioned members need a prompt set: prompts=demo, or prompts=file "
                              "prompts.path=...")
        from tstitch.data.prompts import assign

        return x, assign(seeds, prompts, base_seed), rng
    y = rng.randint(num_classes)
    if labels == "balanced":
        y = torch.as_tensor([int(s) % num_classes for s in seeds], device=device)
    elif labels != "random":
        raise ConfigError(f"labels must be 'random' or 'balanced', not {labels!r} (labels=...)")
    return x, y, rng
