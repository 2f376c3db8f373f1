"""`tstitch-evaluate`: FID / IS / KID / precision-recall of a sample set against a reference, via torch-fidelity.
Every input is checked first (readable, images, range, layout, enough of them): one line names what is wrong. The
extractor is the reference's own unless given (``extractor=auto``); metrics.json goes to the run directory and
beside the samples, and the last line says where."""
import zipfile
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.errors import ConfigError


@hydra.main(version_base=None, config_path=CONF, config_name="evaluate")
@guard
def main(cfg):
    from tstitch import metrics
    from tstitch.cli import schema
    from tstitch.files import dumps

    schema.check(cfg, "evaluate")
    for key in ("samples", "reference"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"give {key}=PATH (an .npz, an image folder, or a reference made by "
                              "tstitch-reference)")
    options = {k: v for k, v in cfg.items() if k != "samples"}  # metric=fid's keys, at the top
    if options["extractor"] == AUTO:
        options["extractor"] = extractor_of(cfg.reference)
    result = metrics.build(options).evaluate(cfg.samples)
    result["samples"] = str(cfg.samples)
    for note in result.get("notes", []):
        print(f"tstitch-evaluate: read {note}")
    print(dumps(result))
    print("tstitch-evaluate: " + save(dumps(result, indent=2) + "\n", cfg.samples,
                                       Path(HydraConfig.get().runtime.output_dir)))


AUTO = "auto"  # extractor=auto: the reference's own (extractor_of)


def extractor_of(reference):
    """The feature extractor of ``extractor=auto``: the one a tstitch-reference file was made with, the toy zoo's
    (tstitch-fashion) for a named Fashion-MNIST set, else Inception-v3 (FID's own)."""
    from tstitch.data.imageset import NAMED
    from tstitch.data.toy.features import NAME
    from tstitch.metrics.fidelity import INCEPTION

    if str(reference) in NAMED:
        return NAME
    path = Path(reference)
    if path.suffix == ".npz" and path.is_file():
        try:
            with np.load(path) as z:  # members load when read: only this small one is
                if "extractor" in z.files:
                    return str(z["extractor"])
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # unreadable: the metric names what is wrong with it
    return INCEPTION


def save(text, samples, run_dir):
    """Write ``text`` (metrics.json) into ``run_dir`` and beside ``samples`` (the folder of an .npz, or the image
    folder itself) unless a metrics.json is there already; returns the line that says where it went."""
    from tstitch.files import DiskFull, write_text

    run, near = run_dir / FILE, (Path(samples) if Path(samples).is_dir() else Path(samples).parent) / FILE
    same = near.absolute() == run.absolute()
    taken = near.exists() and not same  # checked before the run directory's copy is written
    write_text(run, text)
    if same:
        return f"metrics in {run}"
    if taken:
        return f"metrics in {run} ({near} is there already, from an earlier evaluation: not overwritten)"
    try:
        write_text(near, text)
    except (OSError, DiskFull) as e:
        return f"metrics in {run} (not beside the samples: {e})"
    return f"metrics in {near} and {run}"


FILE = "metrics.json"


entry = entry_point(main, "evaluate")

if __name__ == "__main__":
    entry()
