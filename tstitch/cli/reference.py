"""`tstitch-reference source=... [out=...]`: a reference for `tstitch-evaluate` (and `metric=fid`): the FID statistics
and the features KID and precision/recall need, of an image folder, an images .npz or a named set
(`fashion-mnist-test`), for one extractor, in one .npz; a reference set is then read once, not per evaluation."""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.errors import ConfigError


@hydra.main(version_base=None, config_path=CONF, config_name="reference")
@guard
def main(cfg):
    from tstitch.cli import schema
    from tstitch.data.toy import features  # noqa: F401 - registers the toy extractor with torch-fidelity
    from tstitch.metrics import fidelity

    schema.check(cfg, "reference")
    if OmegaConf.is_missing(cfg, "source"):
        raise ConfigError("give source=PATH (an image folder, an images .npz, or fashion-mnist-test)")
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "reference.npz"
    path = fidelity.make_reference(cfg.source, out, extractor=cfg.extractor, weights=cfg.weights,
                                   metrics=list(cfg.metrics), batch_size=cfg.batch_size, float_range=cfg.float_range)
    print(f"tstitch-reference: wrote {path} ({cfg.extractor} of {cfg.source}); use it as "
          f"tstitch-evaluate reference={path} extractor={cfg.extractor}")


def check_out(cfg, argv):
    """``out=`` must be a .npz path that can be written, checked before Hydra makes the run directory."""
    if cfg.get("out"):
        from tstitch.metrics.fidelity import check_out as check

        check(cfg.out)


entry = entry_point(main, "reference", after=check_out)

if __name__ == "__main__":
    entry()
