"""`tstitch-evaluate`: FID / IS / KID / precision-recall of a sample set against a reference, via torch-fidelity
(``metric=fid``, the default), or ADM's evaluation suite (``metric=adm``: FID, sFID, IS, precision/recall).
Every input is checked first (readable, images, range, layout, enough of them): one line names what is wrong. The
extractor is the reference's own unless given (``extractor=auto``); metrics.json goes to the run directory and
beside the samples, and the last line says where.

The chosen metric's keys sit at the top level (``conf/evaluate.yaml``: ``/metric@_here_: fid``), so Hydra's name
for the group is ``metric@_global_``; ``plain_metric`` lets ``metric=adm`` choose it, before Hydra reads the
command line."""
import inspect
import sys
import zipfile
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, fail, guard
from tstitch.errors import ConfigError
from tstitch.searchpath import config_dirs


@hydra.main(version_base=None, config_path=CONF, config_name="evaluate")
@guard
def main(cfg):
    from tstitch import metrics
    from tstitch.cli import schema
    from tstitch.files import dumps

    schema.check(cfg, "evaluate")
    options = metric_options(cfg)
    result = metrics.build(options).evaluate(cfg.samples)
    result["samples"] = str(cfg.samples)
    for note in result.get("notes", []):
        print(f"tstitch-evaluate: read {note}")
    print(dumps(result))
    print("tstitch-evaluate: " + save(dumps(result, indent=2) + "\n", cfg.samples,
                                       Path(HydraConfig.get().runtime.output_dir)))


AUTO = "auto"  # extractor=auto: the reference's own (extractor_of); for metric=adm its default, inception


def metric_options(cfg):
    """The chosen metric's keyword arguments: every key but ``samples``, each one its class takes (a key of another
    metric, e.g. ``metrics=`` with metric=adm, is one line naming the keys it has), ``extractor=auto`` resolved.
    Checked before Hydra starts (nothing written yet), and again in the job."""
    from hydra.utils import get_class

    from tstitch.metrics import FidelityMetric

    for key in ("samples", "reference"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"give {key}=PATH (an .npz, an image folder, or a reference made by "
                              "tstitch-reference)")
    options = {k: v for k, v in cfg.items() if k != "samples"}
    if "_target_" not in options:
        raise ConfigError("this metric scores nothing; give metric=fid (torch-fidelity) or metric=adm (ADM's suite)")
    cls = get_class(options["_target_"])
    params = inspect.signature(cls.__init__).parameters
    if not hasattr(cls, "evaluate"):
        raise ConfigError(f"{cls.__name__} cannot score a sample file; give metric=fid or metric=adm")
    takes = sorted(k for k in params if k not in ("self", "kwargs"))
    for key in options:
        if key not in params and not key.startswith("_"):
            raise ConfigError(f"{key}= is not an option of {cls.__name__} (the metric chosen); its options: "
                              f"{', '.join(takes)}")
    if options.get("extractor") == AUTO:
        options["extractor"] = (extractor_of(cfg.reference) if issubclass(cls, FidelityMetric)
                                else params["extractor"].default)
    return options


def plain_metric(argv):
    """``argv`` with ``metric=NAME`` written as Hydra names that group here, ``metric@_global_=NAME``, followed, where
    NAME's config has no ``metrics`` key (metric=adm), by ``~metrics`` (evaluate.yaml's own ``metrics: [fid]``)
    unless ``metrics=`` is given, which the metric then refuses in one line. A metric that cannot score a sample
    file (metric=clip, metric=none) is a ConfigError."""
    from hydra.utils import get_class

    given = any(a.lstrip("+~").split("=", 1)[0] == "metrics" for a in argv)
    out = []
    for a in argv:
        key, eq, name = a.partition("=")
        if not (eq and key == "metric"):
            out.append(a)
            continue
        out.append(f"metric@_global_={name}")
        path = next((p for p in (d / "metric" / f"{name}.yaml" for d in config_dirs()) if p.is_file()), None)
        if path is None:
            continue  # Hydra names the options there are
        spec = OmegaConf.load(path)
        if not hasattr(get_class(spec["_target_"]) if "_target_" in spec else None, "evaluate"):
            raise ConfigError(f"metric={name} cannot score a sample set; give metric=fid (torch-fidelity) or "
                              "metric=adm (ADM's evaluation suite)")
        if "metrics" not in spec and not given:
            out.append("~metrics")  # beside it: Hydra reads no override after a flag such as --help
    return out


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


def entry():
    try:
        sys.argv[1:] = plain_metric(sys.argv[1:])  # metric=adm: as metric@_global_=adm
    except ConfigError as e:
        fail(str(e), main.__module__)
    entry_point(main, "evaluate", after=lambda cfg, argv: metric_options(cfg))()


if __name__ == "__main__":
    entry()
