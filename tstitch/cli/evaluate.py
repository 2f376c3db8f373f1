"""`tstitch-evaluate`: FID / IS / KID / precision-recall of a sample set against a reference, via torch-fidelity."""
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.errors import ConfigError


@hydra.main(version_base=None, config_path=CONF, config_name="evaluate")
@guard
def main(cfg):
    from tstitch import fidelity
    from tstitch.toy import features  # noqa: F401 - registers the toy extractor with torch-fidelity

    for key in ("samples", "reference"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"give {key}=PATH (an .npz or an image folder)")
    result = fidelity.evaluate(cfg.samples, cfg.reference, metrics=list(cfg.metrics), extractor=cfg.extractor,
                               weights=cfg.weights, kid_subset_size=cfg.kid_subset_size,
                               prc_neighborhood=cfg.prc_neighborhood, batch_size=cfg.batch_size,
                               cache_root=cfg.cache_root)
    result["samples"] = str(cfg.samples)
    out = Path(HydraConfig.get().runtime.output_dir) / "metrics.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


entry = entry_point(main)

if __name__ == "__main__":
    entry()
