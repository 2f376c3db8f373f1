"""Classifier-free guidance (Ho & Salimans, 2022) as a combinator: member + condition -> denoiser.

``scale`` is w in eps = eps_u + w (eps_c - eps_u): 1 means no guidance (one plain conditional forward).
Conditional and unconditional halves run as one batched forward. ``channels`` guides only the first k
channels and keeps the conditional prediction for the rest, which is what the official DiT code does
(k = 3 of 4 latent channels) "for exact reproducibility". A member with ``null_draws`` (LDM, whose unconditional
input is random) draws its null condition once, from ``randn_like`` (each sample's generator).
"""
import torch

from tstitch.models.protocols import Output


def _cat(a, b):
    if isinstance(a, dict):
        return {k: _cat(a[k], b[k]) for k in a}
    return torch.cat([a, b])


def guided(member, cond, scale=1.0, channels=None, randn_like=torch.randn_like):
    """A denoiser ``(x, t) -> Output`` for ``member`` conditioned on ``cond`` with guidance ``scale``."""
    if scale == 1.0 or member.guidance_embedded:  # LCM: w is an input of the network
        return lambda x, t: member(x, t, cond)
    both = _cat(cond, member.null(cond, randn_like) if member.null_draws else member.null(cond))

    def denoise(x, t):
        out = member(torch.cat([x, x]), t, both)
        eps_c, eps_u = out.eps.chunk(2)
        k = eps_c.shape[1] if channels is None else channels
        eps = torch.cat([eps_u[:, :k] + scale * (eps_c[:, :k] - eps_u[:, :k]), eps_c[:, k:]], dim=1)
        return Output(eps, None if out.v is None else out.v.chunk(2)[0])

    return denoise
