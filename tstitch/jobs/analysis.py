"""The paper's analysis of why stitching works (T-Stitch §3, Figs. 3 and 4): along one member's trajectory, how
far the other members agree with it, step by step.

``trace`` samples with one member (the reference, by default the last: the large model) and, at every model call,
feeds the same ``x_t`` to every member (each with its own conditioning, guidance and timestep of equal noise level,
as in a stitched run). It records each member's noise prediction and its predicted ``x0`` per call. From a
``Trace``:

* ``cosine(trace)``: per call, the cosine similarity of each member's noise prediction with the reference's
  (per sample, flattened, then the mean over the batch). The paper's observation: the small and the large DiT
  agree most at the first, noisiest steps.
* ``bands(trace)``: per call and radial frequency band of the 2-D FFT of the predicted ``x0`` (per channel), the
  relative error of each member's spectrum against the reference's, ``|F_m - F_ref| / |F_ref|`` summed over the
  band. Low frequencies (coarse layout) are decided first; a small model that matches the large one there while
  missing the high frequencies is what the early steps need.

``figure(...)`` draws both: cosine similarity against the sampling step, and a step x band heat map per member.
``experiments/analysis/analyze.py`` runs it for any pair (or more) of the zoo from the same configs as ``tstitch``.
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from tstitch.models import checks
from tstitch.sampling import solvers
from tstitch.sampling.sample import as_members, member_denoisers, prepare
from tstitch.sampling.stitch import alone, check_compatible


@dataclass
class Trace:
    """What ``trace`` recorded: per model call ``c``, its timestep ``t[c]``, sampling step ``step[c]`` and noise level
    ``abar[c]``, and per member ``k`` the noise prediction ``eps[k][c]`` and predicted ``x0[k][c]`` (float32, on the
    CPU), for the trajectory of member ``reference``, and its final sample ``x``."""

    names: list
    reference: int
    t: list = field(default_factory=list)
    step: list = field(default_factory=list)
    abar: list = field(default_factory=list)
    eps: list = field(default_factory=list)
    x0: list = field(default_factory=list)
    x: torch.Tensor | None = None  # the reference's final sample (what ``tstitch.sample`` gives it alone)


class Probe:
    """Denoiser combinator: returns the ``reference`` denoiser's output at every call, after asking every denoiser
    the same question and recording the answers into ``trace``."""

    def __init__(self, denoisers, schedule, grid, trace):
        self.denoisers, self.schedule, self.grid, self.trace = denoisers, schedule, grid, trace

    def __call__(self, x, t):
        c = len(self.trace.t)
        abar = self.schedule.abar_at(float(t))
        outs = [d(x, t) for d in self.denoisers]
        self.trace.t.append(t)
        self.trace.step.append(int(self.grid.step[c]) if c < len(self.grid.step) else c)
        self.trace.abar.append(abar)
        for k, out in enumerate(outs):
            eps = out.eps.float()
            x0 = (x.float() - (1 - abar) ** 0.5 * eps) / abar ** 0.5
            self.trace.eps[k].append(eps.cpu())
            self.trace.x0[k].append(x0.cpu())
        return outs[self.trace.reference]


@torch.no_grad()
def trace(members, noise, labels, *, reference=-1, solver="ddim", steps=20, guidance=1.0, channels=None,
          randn_like=torch.randn_like, **solver_options) -> Trace:
    """Sample ``noise`` with member ``reference`` alone and record every member's prediction at each of its calls
    (see the module docstring). The keywords are ``tstitch.sample``'s."""
    members = as_members(members, noise.device)
    check_compatible(members)
    noise, labels = checks.inputs(members, noise, labels, guidance)
    reference = reference % len(members)
    grid, schedule, _, options = prepare(members, alone(reference, len(members)), solver, steps, "steps",
                                         solver_options)
    denoisers = member_denoisers(members, labels, schedule, guidance, channels, randn_like)
    out = Trace([m.name for m in members], reference, eps=[[] for _ in members], x0=[[] for _ in members])
    probe = Probe(denoisers, schedule, grid, out)
    out.x = solvers.entry(solver).solve(probe, noise, grid.timesteps, grid.abar, schedule=schedule, steps=steps,
                                randn_like=randn_like, clip=members[0].space.clip, callback=None, **options)
    return out


def cosine(tr: Trace) -> np.ndarray:
    """(members, calls): the mean over the batch of the cosine similarity of each member's noise prediction with
    the reference's (1 for the reference itself)."""
    ref = tr.eps[tr.reference]
    out = np.zeros((len(tr.names), len(ref)))
    for k, eps in enumerate(tr.eps):
        for c, (a, b) in enumerate(zip(eps, ref)):
            out[k, c] = float(torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean())
    return out


def radial_bands(shape, n_bands):
    """(H, W) integer band index of each 2-D FFT frequency (``torch.fft.fft2`` layout): the radius
    sqrt(fy^2 + fx^2) in cycles per pixel, 0 ... sqrt(0.5), cut into ``n_bands`` equal intervals."""
    h, w = shape
    fy, fx = torch.fft.fftfreq(h).abs(), torch.fft.fftfreq(w).abs()
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / (0.5 ** 0.5)
    return torch.clamp((radius * n_bands).long(), max=n_bands - 1)


def bands(tr: Trace, n_bands=8) -> np.ndarray:
    """(members, calls, bands): per call and radial band (low to high frequency), the relative error of each
    member's predicted-x0 amplitude spectrum against the reference's, sum |F_m - F_ref| / sum |F_ref| over the
    band's frequencies, channels and samples (0 for the reference itself)."""
    ref = tr.x0[tr.reference]
    index = radial_bands(ref[0].shape[-2:], n_bands).flatten()
    out = np.zeros((len(tr.names), len(ref), n_bands))
    for k, x0 in enumerate(tr.x0):
        for c, (a, b) in enumerate(zip(x0, ref)):
            fa, fb = torch.fft.fft2(a.double()), torch.fft.fft2(b.double())
            diff = (fa - fb).abs().flatten(0, -3).sum(0).flatten()
            size = fb.abs().flatten(0, -3).sum(0).flatten()
            num = torch.zeros(n_bands, dtype=torch.float64).index_add_(0, index, diff)
            den = torch.zeros(n_bands, dtype=torch.float64).index_add_(0, index, size)
            out[k, c] = (num / den.clamp_min(1e-12)).numpy()
    return out


def figure(tr: Trace, path, n_bands=8):
    """One figure at ``path``: the cosine similarity of every member's noise prediction with the reference's
    against the sampling step, and per non-reference member a step x frequency-band heat map of its predicted
    x0's spectral error against the reference's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cos, err = cosine(tr), bands(tr, n_bands)
    others = [k for k in range(len(tr.names)) if k != tr.reference]
    fig, axes = plt.subplots(1, 1 + len(others), figsize=(4.5 * (1 + len(others)), 3.6), squeeze=False)
    ax = axes[0, 0]
    for k in others:
        ax.plot(range(1, cos.shape[1] + 1), cos[k], marker=".", label=tr.names[k])
    ax.set_xlabel("model call (noisiest first)")
    ax.set_ylabel(f"cosine similarity with {tr.names[tr.reference]}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for j, k in enumerate(others, 1):
        ax = axes[0, j]
        im = ax.imshow(err[k].T, origin="lower", aspect="auto", cmap="magma",
                       extent=(0.5, err.shape[1] + 0.5, -0.5, n_bands - 0.5))
        ax.set_xlabel("model call (noisiest first)")
        ax.set_ylabel("frequency band (low to high)")
        ax.set_title(f"{tr.names[k]}: x0 spectrum error vs {tr.names[tr.reference]}", fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return cos, err
