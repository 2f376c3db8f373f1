import lightning as L
import torch

from tstitch import seeds
from tstitch.sample import sample


class Seeds(torch.utils.data.Dataset):
    """The seeds still to generate, one item each."""

    def __init__(self, todo):
        self.todo = list(todo)

    def __len__(self):
        return len(self.todo)

    def __getitem__(self, i):
        return self.todo[i]


class Generation(L.LightningModule):
    """``predict_step(seeds) -> {"seeds", "labels", "images", "nfe"}``: samples drawn from each seed alone,
    decoded to uint8 by ``codec``. ``options`` are ``tstitch.sample``'s keyword arguments."""

    def __init__(self, members, codec, options, labels="random"):
        super().__init__()
        self.members, self.codec, self.options, self.labels = members, codec, dict(options), labels
        self.nets = torch.nn.ModuleList([m.net for m in members])  # so that Lightning moves them to the device

    def on_predict_start(self):
        if hasattr(self.codec, "vae"):  # a VAE decoder runs where the members run
            self.codec.vae.to(self.device)
            self.codec.device = self.device

    def predict_step(self, batch, batch_idx):
        batch_seeds = [int(s) for s in batch]
        first = self.members[0]
        x, y, rng = seeds.draw(batch_seeds, first.space.shape, first.num_classes, self.labels, self.device)
        r = sample(self.members, x, y, randn_like=rng.randn_like, **self.options)
        return {"seeds": batch_seeds, "labels": y.cpu(), "images": self.codec.decode(r.x).cpu(), "nfe": r.nfe}
