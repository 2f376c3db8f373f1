import torch


def predict_x0(out, x, abar_t, clip):
    """x0 from the eps prediction, optionally clipped to [-1, 1] (pixel-space models)."""
    x0 = (x - (1 - abar_t) ** 0.5 * out.eps) / abar_t ** 0.5
    return x0.clamp(-1, 1) if clip else x0


def eps_from_x0(x, x0, abar_t):
    return (x - abar_t ** 0.5 * x0) / (1 - abar_t) ** 0.5


def as_float(abar):
    return [float(a) for a in torch.as_tensor(abar, dtype=torch.float64)]
