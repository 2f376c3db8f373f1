"""`tstitch-train-features`: train the toy zoo's feature net (FD / class accuracy) on Fashion-MNIST. The spelling of
before, ``tstitch-train-features --epochs 4 --batch-size 128 --out FILE``, still runs (``tstitch.cli.spelling``)."""
import logging
import math
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.cli.spelling import translate
from tstitch.errors import ConfigError

log = logging.getLogger(__name__)
INTEGERS = {"epochs": 1, "batch_size": 1, "seed": 0, "threads": 1}  # key -> its least value


def check(cfg, argv=None):
    """The keys' types and ranges, in one line each (before Hydra makes the run directory, and again in the run)."""
    for key, least in INTEGERS.items():
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ConfigError(f"{key}={v!r} is not allowed: give an integer >= {least}")
    lr = cfg.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr={lr!r} is not allowed: give a number > 0")
    if cfg.out is not None and (not isinstance(cfg.out, str) or Path(cfg.out).suffix != ".safetensors"):
        raise ConfigError(f"out={cfg.out!r} is not a .safetensors file: give out=PATH.safetensors, or leave it out "
                          "for <run dir>/features.safetensors")


@hydra.main(version_base=None, config_path=CONF, config_name="features")
@guard
def main(cfg):
    from tstitch.data.toy import data
    from tstitch.data.toy.features import accuracy, train_classifier
    from tstitch.files import dumps, write_text
    from tstitch.models.checkpoints import save_state_dict

    check(cfg)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "features.safetensors"
    try:
        train, test = data.load("train"), data.load("test")
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    if cfg.batch_size > len(train[0]):
        raise ConfigError(f"batch_size={cfg.batch_size} is more than the {len(train[0])} training images; give "
                          f"batch_size={min(128, len(train[0]))}")
    start = time.time()
    net = train_classifier(train, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    acc = accuracy(net, *test)
    save_state_dict({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, out)
    meta = {"test_accuracy": acc, "train_seconds": round(time.time() - start, 1),
            "config": OmegaConf.to_container(cfg, resolve=True)}
    write_text(out.with_suffix(".json"), dumps(meta, indent=2) + "\n")
    log.info(f"tstitch-train-features: test accuracy {acc:.4f} after {cfg.epochs} epochs in {meta['train_seconds']} "
             f"s; weights in {out} (and {out.with_suffix('.json').name} beside them)")


# the spelling before key=value: tstitch-train-features --epochs 4 --batch-size 128 --lr 3e-3 --seed 0 --out FILE
OLD_FLAGS = {"--epochs": "epochs", "--batch-size": "batch_size", "--lr": "lr", "--seed": "seed",
             "--threads": "threads", "--out": "out"}


def entry():
    sys.argv[1:] = translate("tstitch-train-features", sys.argv[1:], OLD_FLAGS, paths={"out"})
    entry_point(main, "features", after=check)()


if __name__ == "__main__":
    entry()
