import time

import lightning as L
import torch

from tstitch import seeds
from tstitch.run import sync
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

    def __init__(self, members, codec, options, labels="random", warmup_batch=None):
        super().__init__()
        self.members, self.codec, self.options, self.labels = members, codec, dict(options), labels
        self.nets = torch.nn.ModuleList([m.net for m in members])  # so that Lightning moves them to the device
        self.warmup_batch = warmup_batch
        self.seconds, self.count = 0.0, 0  # sampling time (synchronised, warm-up excluded) and images, this rank

    def on_predict_start(self):
        if hasattr(self.codec, "vae"):  # a VAE decoder runs where the members run
            self.codec.vae.to(self.device)
            self.codec.device = self.device
        if self.warmup_batch:  # kernels and allocator at the real batch size, outside the timed region
            self._sample(list(range(self.warmup_batch)), steps=2)

    def _sample(self, batch_seeds, **override):
        first = self.members[0]
        x, y, rng = seeds.draw(batch_seeds, first.space.shape, first.num_classes, self.labels, self.device)
        return y, sample(self.members, x, y, randn_like=rng.randn_like, **{**self.options, **override})

    def predict_step(self, batch, batch_idx):
        batch_seeds = [int(s) for s in batch]
        sync(self.device)
        start = time.perf_counter()
        y, r = self._sample(batch_seeds)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        self.count += len(batch_seeds)
        return {"seeds": batch_seeds, "labels": y.cpu(), "images": self.codec.decode(r.x).cpu(), "nfe": r.nfe}

    def timing(self):
        """Sampling time over all ranks: seconds per image per device, and images per second in all."""
        t = self.trainer.strategy.reduce(torch.tensor([self.seconds, float(self.count)], dtype=torch.float64,
                                                      device=self.device), reduce_op="sum")
        seconds, count = float(t[0]), float(t[1])
        if not count:
            return {}
        world = self.trainer.world_size
        return {"s_per_image": seconds / count, "images_per_second": count / (seconds / world)}
