"""`tstitch-generate`: one allocation's sample set on Lightning (any devices/nodes), resumable, as samples.npz."""
import json
import subprocess
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard


def git_sha():
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def check_identity(out, identity):
    """Shards in a run directory must come from one sampling configuration: refuse to resume with another."""
    from tstitch.errors import ConfigError

    path = out / "identity.json"
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as stored
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != identity:
            diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            raise ConfigError(f"{out} holds samples of another configuration (differs in: {', '.join(diff)}); "
                              "resume with the same settings or choose a new hydra.run.dir=...")
    else:
        path.write_text(json.dumps(identity, indent=2))


@hydra.main(version_base=None, config_path=CONF, config_name="generate")
@guard
def main(cfg):
    import lightning as L

    from tstitch.engine.module import Generation, Seeds
    from tstitch.engine.writer import ShardWriter, done, export_npz, write_manifest
    from tstitch.run import load_stitch, sample_options
    from tstitch.stitch import check_fractions

    torch.set_num_threads(cfg.threads)
    out = Path(HydraConfig.get().runtime.output_dir)
    members, codec = load_stitch(cfg)
    fractions = check_fractions(cfg.stitch.fractions, len(members))
    options = sample_options(cfg, fractions)
    wanted = list(range(cfg.seed, cfg.seed + cfg.num_samples))
    check_identity(out, {"members": OmegaConf.to_container(cfg.stitch.members, resolve=True), "labels": cfg.labels,
                         "options": options})
    have = done(out)
    todo = [s for s in wanted if s not in have]
    writer = ShardWriter(out, png=cfg.png)
    trainer = L.Trainer(**cfg.trainer, callbacks=[writer], logger=False, enable_checkpointing=False,
                        enable_model_summary=False)
    start = time.perf_counter()
    timing = {}
    if todo:
        loader = torch.utils.data.DataLoader(Seeds(todo), batch_size=cfg.batch_size, shuffle=False)
        module = Generation(members, codec, options, cfg.labels, warmup_batch=min(cfg.batch_size, len(todo)))
        trainer.predict(module, loader, return_predictions=False)
        timing = module.timing()  # a collective: every rank calls it
    seconds = time.perf_counter() - start
    if trainer.is_global_zero:
        path = export_npz(out, wanted)
        write_manifest(out, {"config": OmegaConf.to_container(cfg, resolve=True), "git": git_sha(),
                             "members": [m.name for m in members], "fractions": fractions,
                             "nfe_per_image": writer.nfe, "generated": len(todo), "resumed_from": len(wanted) - len(todo),
                             "seconds": round(seconds, 2), **timing, "world_size": trainer.world_size,
                             "samples": str(path)})
        print(f"{len(wanted)} samples ({len(todo)} generated now, {len(wanted) - len(todo)} from earlier shards) "
              f"in {path}")


entry = entry_point(main)

if __name__ == "__main__":
    entry()
