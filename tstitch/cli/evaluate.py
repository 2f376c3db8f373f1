"""`tstitch-evaluate`: FID / IS / KID / precision-recall of a sample set against a reference, via torch-fidelity.
Every input is checked first (readable, images, range, layout, enough of them): one line names what is wrong."""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.errors import ConfigError


@hydra.main(version_base=None, config_path=CONF, config_name="evaluate")
@guard
def main(cfg):
    from tstitch import metrics
    from tstitch.cli import schema
    from tstitch.files import dumps, write_text

    schema.check(cfg, "evaluate")
    for key in ("samples", "reference"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"give {key}=PATH (an .npz, an image folder, or a reference made by "
                              "tstitch-reference)")
    metric = metrics.build({k: v for k, v in cfg.items() if k != "samples"})  # metric=fid's keys, at the top
    result = metric.evaluate(cfg.samples)
    result["samples"] = str(cfg.samples)
    for note in result.get("notes", []):
        print(f"tstitch-evaluate: read {note}")
    write_text(Path(HydraConfig.get().runtime.output_dir) / "metrics.json", dumps(result, indent=2) + "\n")
    print(dumps(result))


entry = entry_point(main, "evaluate")

if __name__ == "__main__":
    entry()
