"""Training a class-conditional DiT with ADM's hybrid loss (L_simple + L_vlb for the learned variance) and
an EMA of the weights. The maths is a pure function (``diffusion_loss``); Lightning only runs the loop."""
import json
import time
from pathlib import Path

import lightning as L
import torch

from tstitch.errors import ConfigError
from tstitch.models.checkpoints import save_state_dict
from tstitch.models.codecs import from_uint8
from tstitch.sampling import gaussian


def diffusion_loss(net, x0, y, chain, generator=None, timesteps=None):
    """ADM's loss for an eps-predicting net with learned-range variance (Nichol & Dhariwal 2021, sec. 3.1).

    The MSE trains eps; the variational bound trains the variance only (the mean is detached inside it).
    ``timesteps``: ``(lo, hi)`` to train on t uniform in lo ... hi - 1 only (T-Stitch's fine-tuning at the stitched
    interval, paper Table 6), None for all timesteps. Returns the per-example loss and its two parts.
    """
    n = x0.shape[0]
    lo, hi = timesteps or (0, len(chain["abar"]))
    t = torch.randint(lo, hi, (n,), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    abar = chain["abar"].to(x0.device)[t].float().view(-1, *[1] * (x0.ndim - 1))
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    out = net(xt, t, y)
    eps, v = out.chunk(2, dim=1)
    mse = (eps - noise).square().flatten(1).mean(1)
    # variational bound with a frozen mean
    pred_x0 = gaussian.x0_from_eps(chain, t, xt, eps.detach())
    mean = gaussian.posterior_mean(chain, t, xt, pred_x0)
    log_var = gaussian.learned_range_log_var(chain, t, xt, v)
    true_mean = gaussian.posterior_mean(chain, t, xt, x0)
    true_log_var = gaussian.at(chain["log_var_clipped"], t, xt)
    ln2 = torch.log(torch.tensor(2.0))  # nats -> bits
    kl = gaussian.normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1) / ln2
    nll = -gaussian.discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).flatten(1).mean(1) / ln2
    vb = torch.where(t == 0, nll, kl)
    return mse + vb, mse, vb


def interval(timesteps, num_timesteps):
    """``(lo, hi)`` from the config's ``timesteps`` (``[lo, hi]``: train on lo ... hi - 1), None for all of
    0 ... ``num_timesteps`` - 1; a range outside them is one ConfigError line."""
    if timesteps is None:
        return None
    lo, hi = (int(v) for v in timesteps)
    if not 0 <= lo < hi <= num_timesteps:
        raise ConfigError(f"timesteps=[{lo},{hi}] is not a range of this model's timesteps: give [lo,hi] with "
                          f"0 <= lo < hi <= {num_timesteps} (training draws t in lo ... hi - 1)")
    return lo, hi


class DiffusionTraining(L.LightningModule):
    def __init__(self, net, chain, lr=6e-4, warmup=500, ema_decay=0.9995, weight_decay=0.0, timesteps=None):
        super().__init__()
        self.net = net
        self.ema = {}
        self.chain = chain
        self.lr, self.warmup, self.ema_decay, self.weight_decay = lr, warmup, ema_decay, weight_decay
        self.timesteps = timesteps

    def on_fit_start(self):
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def training_step(self, batch, _):
        x, y = batch
        loss, mse, vb = diffusion_loss(self.net, from_uint8(x), y, self.chain, timesteps=self.timesteps)
        self.log_dict({"loss": loss.mean(), "mse": mse.mean(), "vb": vb.mean()}, on_step=True, prog_bar=True)
        return loss.mean()

    def on_train_batch_end(self, *_):
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                if v.dtype.is_floating_point:
                    self.ema[k].lerp_(v, 1 - self.ema_decay)
                else:
                    self.ema[k].copy_(v)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, self.warmup)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Snapshots(L.Callback):
    """Writes the EMA weights (fp16 safetensors, official key names) every ``every`` steps and at the end."""

    def __init__(self, out_dir, every, meta):
        self.out_dir, self.every, self.meta = Path(out_dir), every, meta
        self.start = time.time()

    def _write(self, module, step, final=False):
        name = "ema.safetensors" if final else f"ema_{step:06d}.safetensors"
        save_state_dict({k: v.half() for k, v in module.ema.items()}, self.out_dir / name)
        meta = {**self.meta, "step": step, "train_seconds": round(time.time() - self.start, 1)}
        (self.out_dir / "train.json").write_text(json.dumps(meta, indent=2))

    def on_train_batch_end(self, trainer, module, *_):
        step = trainer.global_step
        if step % self.every == 0 and step < trainer.max_steps:
            self._write(module, step)

    def on_train_end(self, trainer, module):
        self._write(module, trainer.global_step, final=True)


def fit(net, chain, data, *, steps, batch_size, lr, warmup, ema_decay, seed, out_dir, snapshot_every=2000,
        accelerator="cpu", progress=True, meta=None, timesteps=None):
    """Train ``net`` on ``data`` = (uint8 images, labels) and write EMA snapshots to ``out_dir``; ``timesteps``
    as ``diffusion_loss`` takes it. A ``net`` that holds weights already is fine-tuned (its EMA starts from them)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=batch_size,
                                         shuffle=True, drop_last=True, num_workers=0)
    module = DiffusionTraining(net, chain, lr=lr, warmup=warmup, ema_decay=ema_decay, timesteps=timesteps)
    trainer = L.Trainer(max_steps=steps, accelerator=accelerator, devices=1,
                        logger=L.pytorch.loggers.CSVLogger(out_dir), enable_checkpointing=False,
                        log_every_n_steps=100, callbacks=[Snapshots(out_dir, snapshot_every, dict(meta or {}))],
                        enable_model_summary=False, enable_progress_bar=progress)
    trainer.fit(module, loader)
    return module
