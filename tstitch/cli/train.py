"""`tstitch-train`: train a toy-zoo DiT (or the feature net with `tstitch-train-features`)."""
import json
import logging
import shutil
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.errors import ConfigError

log = logging.getLogger(__name__)

@hydra.main(version_base=None, config_path=CONF, config_name="train")
@guard
def main(cfg):
    from tstitch.data.toy import data
    from tstitch.jobs import train
    from tstitch.models.nets.dit import DiT
    from tstitch.models.schedules import Schedule
    from tstitch.sampling import gaussian

    if cfg.model.family != "dit" or cfg.model.space.name != "fashion-mnist-pixels":
        raise ConfigError(f"tstitch-train trains DiTs on Fashion-MNIST pixels (model=toy/small, model=toy/large, or "
                          f"an entry of yours like them), not {cfg.model.name} ({cfg.model.family}, "
                          f"{cfg.model.space.name})")
    torch.set_num_threads(cfg.threads)
    timesteps = train.interval(cfg.timesteps, cfg.model.schedule.num_timesteps)
    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.init:  # fine-tuning: the zoo entry's own weights ("model") or a checkpoint of its format
        from tstitch.models.zoo import load

        entry = OmegaConf.to_container(cfg.model, resolve=True)
        net = load(entry, checkpoint=None if cfg.init == "model" else str(cfg.init)).net.float().train()
        net.requires_grad_(True)
    else:
        net = DiT(**cfg.model.net)
    chain = gaussian.chain(Schedule(**cfg.model.schedule).alphas_cumprod)
    meta = {"config": OmegaConf.to_container(cfg, resolve=True),
            "params": sum(p.numel() for p in net.parameters())}
    train.fit(net, chain, data.load("train"), steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
              warmup=cfg.warmup, ema_decay=cfg.ema_decay, seed=cfg.seed, out_dir=out,
              snapshot_every=cfg.snapshot_every, accelerator=cfg.accelerator, progress=cfg.progress, meta=meta,
              timesteps=timesteps)
    meta = json.loads((out / "train.json").read_text())
    if cfg.export:  # the weights and, beside them, how they were made
        shutil.copyfile(out / "ema.safetensors", cfg.export)
        shutil.copyfile(out / "train.json", Path(cfg.export).with_suffix(".json"))
    log.info(f"trained {meta['params']} parameters for {meta['step']} steps in {meta['train_seconds']} s; "
          f"EMA weights in {out / 'ema.safetensors'}")


entry = entry_point(main)

if __name__ == "__main__":
    entry()
