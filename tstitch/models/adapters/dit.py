"""DiT family adapter: our ``tstitch.models.nets.dit.DiT`` (official parameter names) behind the member protocol.

DiT predicts eps and, with ``learn_sigma``, the learned-range variance on the channel axis; its null class
for guidance is the extra embedding row ``num_classes``; it is called with original timesteps 0 ... 999.
"""
import torch

from tstitch.errors import ConfigError
from tstitch.models.checkpoints import load_into
from tstitch.models.nets.dit import DiT
from tstitch.models.protocols import MemberBase, Output

CONDITION = "labels"  # what a member of this family is conditioned on (class labels or prompts), before loading


class DiTMember(MemberBase):
    family = "dit"
    sampler = {"solver": "ddim", "steps": 100, "guidance": 1.5}  # T-Stitch's DiT tables: DDIM-100, cfg 1.5

    def __init__(self, net, name, schedule, space, cfg_channels=None):
        self.net, self.name, self.schedule, self.space, self.cfg_channels = net, name, schedule, space, cfg_channels

    @property
    def num_classes(self):
        return self.net.num_classes

    def __call__(self, x, t, y):
        out = self.net(x, torch.full((x.shape[0],), t, device=x.device), y)
        if self.net.learn_sigma:
            eps, v = out.chunk(2, dim=1)
            return Output(eps, v)
        return Output(out)

    def null(self, y):
        return torch.full_like(y, self.net.num_classes)

    def condition(self, labels):
        """User class labels (0 ... num_classes - 1) -> this member's condition."""
        if labels.min() < 0 or labels.max() >= self.net.num_classes:
            raise ConfigError(f"{self.name}: class labels must be in [0, {self.net.num_classes}); fix the labels")
        return labels


def load(entry, schedule, space, device="cpu", dtype=torch.float32):
    net_kwargs = dict(entry["net"])
    net = DiT(**net_kwargs)
    if entry.get("checkpoint"):
        load_into(net, entry["checkpoint"], name=entry["name"])
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return DiTMember(net, entry["name"], schedule, space, entry.get("cfg_channels"))
