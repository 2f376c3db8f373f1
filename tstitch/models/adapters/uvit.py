"""U-ViT family adapter: our ``tstitch.models.nets.uvit.UViT`` (official parameter names) behind the member protocol.

U-ViT predicts eps only. Its time input depends on how the model was trained (baofff/U-ViT):

* discrete time (``train_ldm_discrete.py``: ImageNet 256/512 U-ViT-H, Stable Diffusion's ``scaled_linear``
  betas): the net was trained on n = 1 ... 1000 with alpha-bar_n = prod_{k <= n} (1 - beta_k), which is our
  timestep t = n - 1; its sampler feeds n = N t_continuous. So the net gets ``t + 1``.
* continuous time (``train.py``/``train_ldm.py``: ImageNet 64 U-ViT-M/L, ImageNet 256/512 U-ViT-L, the VP-SDE
  with beta 0.1 ... 20): ``sde.ScoreModel`` feeds the net ``999 s``; our schedule ``vp_continuous`` reads
  timestep t at s = (t + 1) / T, so the net gets ``999 (t + 1) / T``.

``t`` is a Python int or float (fractional when the member is stitched with one of another schedule).

Guidance: U-ViT's configs write eps = eps_c + scale (eps_c - eps_u), so the official ``scale`` is w - 1 in our
convention eps = eps_u + w (eps_c - eps_u): official 0.4 (ImageNet 256) is guidance.scale=1.4, 0.7 (512) is
1.7. The null class is the label embedding's extra row (``null_class: 1000`` of 1001 rows); the 64x64 models
have no null class and were sampled without guidance.
"""
import torch

from tstitch.errors import ConfigError
from tstitch.models.checkpoints import load_into
from tstitch.models.nets.uvit import UViT
from tstitch.models.protocols import MemberBase, Output

CONDITION = "labels"  # what a member of this family is conditioned on (class labels or prompts), before loading


def time_input(t, schedule):
    """The network's time input for timestep ``t`` (int or float) of ``schedule``, as the official samplers."""
    if schedule.continuous:
        return 999.0 * (t + 1) / schedule.num_timesteps
    return float(t) + 1.0


class UViTMember(MemberBase):
    family = "uvit"

    def __init__(self, net, name, schedule, space, null_class=None):
        if null_class is not None and null_class != net.num_classes - 1:
            raise ConfigError(f"{name}: null_class {null_class} must be the last label row ({net.num_classes - 1}) "
                              "or null; fix the zoo entry")
        self.net, self.name, self.schedule, self.space, self.null_class = net, name, schedule, space, null_class
        self.cfg_channels = None

    @property
    def sampler(self):
        """U-ViT's own: its DPM-Solver at 50 steps, official cfg scale 0.4 (w 1.4) where it has a null class."""
        return {"solver": "dpm_solver", "steps": 50, "guidance": 1.4 if self.null_class is not None else 1.0}

    @property
    def num_classes(self):
        """User classes: the label rows without the null row."""
        return self.net.num_classes - int(self.null_class is not None)

    def __call__(self, x, t, y):
        t_in = torch.full((x.shape[0],), time_input(t, self.schedule), dtype=torch.float32, device=x.device)
        return Output(self.net(x, t_in, y))

    def null(self, y):
        if self.null_class is None:
            raise ConfigError(f"{self.name} was trained without a null class, so it cannot be guided; "
                              "set guidance.scale=1")
        return torch.full_like(y, self.null_class)

    def condition(self, labels):
        """User class labels (0 ... num_classes - 1) -> this member's condition."""
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ConfigError(f"{self.name}: class labels must be in [0, {self.num_classes}); fix the labels")
        return labels


def load(entry, schedule, space, device="cpu", dtype=torch.float32):
    net = UViT(**entry["net"])
    if entry.get("checkpoint"):
        load_into(net, entry["checkpoint"], name=entry["name"])
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return UViTMember(net, entry["name"], schedule, space, entry.get("null_class"))
