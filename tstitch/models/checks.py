"""Checks that keep a wrong result from passing as a right one: the inputs of ``tstitch.sample`` (one line for a
bad batch instead of an error deep in a convolution), the weights a member loaded and the samples a batch made.

Non-finite values (NaN, inf) are errors by default. A batch's samples are checked with one reduction when the batch
is done (no host sync inside the step loop); only when it fails is the batch sampled again, deterministically,
watching every step, to name the step where the values broke and the member that ran it. ``nonfinite=warn`` turns
the failure into a warning (the images of those seeds are then black).
"""
import math
import numbers
import sys

import torch

from tstitch.errors import ConfigError

MODES = ("error", "warn")


class NonFiniteError(ConfigError):
    """Samples (or weights, or decoded pixels) with NaN or inf."""


def inputs(members, noise, labels, guidance):
    """``(noise as float32, labels)`` for a batch of ``tstitch.sample``, or one ``ConfigError`` line.

    ``noise``: a floating-point tensor of the members' sample shape, one row per sample, finite; another float
    dtype (float16, bfloat16, float64) is cast to float32, the precision the solvers compute in. ``labels``: for
    class-conditional members an integer tensor or a list of ints, one per sample (a list becomes a tensor on the
    noise's device); for text-conditioned members a list of prompts, one per sample."""
    if not isinstance(noise, torch.Tensor):
        raise ConfigError(f"noise must be a torch.Tensor, not {type(noise).__name__}; draw it with "
                          "tstitch.data.seeds.draw(seeds, shape, num_classes)")
    if not noise.is_floating_point():
        raise ConfigError(f"noise must be a floating-point tensor, not {noise.dtype}; draw it with "
                          "tstitch.data.seeds.draw(...) or torch.randn")
    if noise.ndim == 0 or len(noise) == 0:
        raise ConfigError("the batch is empty (noise has no samples); give at least one sample")
    shape = tuple(members[0].space.shape)
    if tuple(noise.shape[1:]) != shape:
        raise ConfigError(f"noise of shape {tuple(noise.shape[1:])} per sample for members trained on {shape}")
    bad = bad_rows(noise)
    if bad:
        raise NonFiniteError(f"noise holds NaN or inf in sample(s) {_first(bad)}; give finite noise "
                             "(tstitch.data.seeds.draw)")
    check_guidance(guidance)
    return noise.float(), _labels(members, labels, len(noise), noise.device)


def check_guidance(guidance):
    """The CFG scale w: a finite number (1 = off), or one ConfigError line."""
    if not isinstance(guidance, numbers.Real) or isinstance(guidance, bool) or not math.isfinite(float(guidance)):
        raise ConfigError(f"guidance must be a finite number (1 = off), not {guidance!r}")


def channels(value, members):
    """``tstitch.sample``'s ``channels`` (the channels guidance acts on): None (each member's own ``cfg_channels``),
    "all", or an int in [1, C] for members whose samples have C channels; anything else is one ConfigError line
    (0 would guide nothing, -1 all but the last, 2.5 two: each a silent change of the guidance)."""
    if value is None or value == "all":
        return
    count = members[0].space.shape[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= count:
        raise ConfigError(f"channels={value!r} is not allowed: give an int in [1, {count}] (guide the first k of the "
                          f"members' {count} channels), 'all', or None for each member's own cfg_channels")


def steps(value):
    """A step count as ``int`` (a numpy or other integral number included) or an ADM respacing string; a bool, a
    float (2.5, 2.0, NaN) or another type is one ConfigError line (``True`` would be 1 step)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"steps={value!r} is not allowed: give an int >= 1 or an ADM respacing string such as "
                          "ddim50")
    return int(value)


def device(value):
    """``value`` as a device string; a CUDA or Apple GPU must be on this machine. Otherwise one ConfigError line."""
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device={value!r} is not a torch device; give 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise ConfigError(f"device={str(dev)!r}, but torch sees {count} CUDA GPU{'' if count == 1 else 's'} on "
                              "this machine; use device='cpu'" + (" or device='cuda:0'" if count else ""))
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps', but torch sees no Apple GPU on this machine; use device='cpu'")
    return str(dev)  # other types (meta: shapes only) as torch has them


class FiniteNoise:
    """A user's ``randn_like`` that must return finite noise of ``x``'s shape: the shape is checked at each draw,
    the values once after sampling (``check``; no host sync inside the step loop)."""

    def __init__(self, randn_like):
        self.randn_like, self.finite = randn_like, None

    def __call__(self, x):
        z = self.randn_like(x)
        if not isinstance(z, torch.Tensor) or z.shape != x.shape:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ConfigError(f"randn_like returned {shape} for samples of shape {tuple(x.shape)}; give a function "
                              "x -> standard normal noise of x's shape (torch.randn_like, seeds.SeedNoise)")
        ok = torch.isfinite(z).all()
        self.finite = ok if self.finite is None else self.finite & ok
        return z

    def check(self):
        if self.finite is not None and not bool(self.finite):
            raise NonFiniteError("randn_like returned NaN or inf; give a function x -> finite standard normal noise "
                                 "of x's shape (torch.randn_like, tstitch.data.seeds.SeedNoise(seeds).randn_like)")


def _labels(members, labels, n, device):
    if all(m.num_classes is None for m in members):  # text-conditioned
        if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or not all(
                isinstance(p, str) for p in labels):
            raise ConfigError("text-to-image members take a list of prompts (strings), one per sample")
        if len(labels) != n:
            raise ConfigError(f"{len(labels)} prompts for a batch of {n} samples; give one prompt per sample")
        return list(labels)
    if isinstance(labels, torch.Tensor):
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise ConfigError(f"labels must be an integer tensor (class indices), not {labels.dtype}; e.g. "
                              "labels.long() if they are whole numbers")
        if labels.ndim != 1 or len(labels) != n:
            raise ConfigError(f"labels of shape {tuple(labels.shape)} for a batch of {n} samples; give one class "
                              "index per sample, shape (N,)")
        return labels
    if not isinstance(labels, (list, tuple)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in labels):
        what = "a list of other values" if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise ConfigError(f"labels must be an integer tensor or a list of ints (class indices), not {what}")
    if len(labels) != n:
        raise ConfigError(f"{len(labels)} labels for a batch of {n} samples; give one class index per sample")
    return torch.tensor([int(v) for v in labels], dtype=torch.long, device=device)


def weights(member):
    """Refuse a member whose network (or text encoder) holds NaN or inf, naming the first such tensor."""
    modules = [("", member.net)] + ([("encoder.", member.encoder)] if member.encoder is not None else [])
    tensors = [(prefix + name, t) for prefix, module in modules for name, t in module.state_dict().items()
               if t.is_floating_point() and not t.is_meta]  # meta: shapes only (nothing to check)
    if not tensors:
        return
    finite = torch.stack([torch.isfinite(t).all().to(tensors[0][1].device) for _, t in tensors])
    if not bool(finite.all()):  # one host sync for the whole model
        name = tensors[finite.tolist().index(False)][0]
        raise NonFiniteError(f"{member.name}: its weights hold NaN or inf ({name}); the checkpoint is damaged or "
                             "was saved from a diverged run: download or export it again")


def bad_rows(x):
    """Indices of the samples of ``x`` that hold NaN or inf (one reduction and one host sync)."""
    bad = ~torch.isfinite(x).flatten(1).all(1)
    return bad.nonzero().flatten().tolist() if bool(bad.any()) else []


def where(resample, names):
    """Sample the batch again (``resample(callback) -> tstitch.sample's Result``), watching each step; returns
    (step, steps in all, member name) of the first step after which a sample was non-finite, or None."""
    flags = []

    def watch(i, x, x0):
        flags.append(torch.isfinite(x).flatten(1).all(1))

    result = resample(watch)
    if not flags:
        return None
    broken = ~torch.stack(flags).all(1)  # per step: some sample non-finite after it
    if not bool(broken.any()):
        return None
    step = int(broken.nonzero()[0])
    plan = list(result.plan)
    member = names[plan[step]] if step < len(plan) else names[-1]
    return step, len(flags), member


def batch(x, seeds, resample, names, mode):
    """The check after each batch: one reduction over its samples ``x`` (of ``seeds``); only a failing batch is
    sampled again (``resample(callback)``, as in ``where``), watching each step, to name where it broke. Raises
    (``mode="error"``) or warns; returns the seeds of the non-finite samples."""
    bad = bad_rows(x)
    if not bad:
        return []
    warn(report(seeds, bad, where(resample, names), mode))
    return [seeds[i] for i in bad]


def report(seeds, bad, found, mode, what="samples"):
    """The one line about non-finite samples; raises it (``mode="error"``) or returns it (``"warn"``)."""
    at = (f"; they first broke at step {found[0] + 1} of {found[1]}, run by {found[2]}" if found else "")
    line = (f"non-finite {what} (NaN or inf) for {len(bad)} of {len(seeds)} seeds in a batch: "
            f"{_first([seeds[i] for i in bad])}{at}. Check the checkpoints, fast.precision (fp32 is the reference) "
            "and guidance.scale; nonfinite=warn keeps going (their images are black)")
    if mode == "error":
        raise NonFiniteError(line)
    return line


def warn(line):
    """A warning the user must see once, as one line on stderr (not Python's warning format)."""
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _first(values, k=8):
    values = list(values)
    return ", ".join(map(str, values[:k])) + (f" and {len(values) - k} more" if len(values) > k else "")
