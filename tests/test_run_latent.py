"""The main job on a latent-space DiT pair: official-format checkpoints of two tiny random DiTs, decoded by a
tiny AutoencoderKL through diffusers, stitched with the DiT zoo's settings (3-channel guidance)."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from tstitch.cli import CONF
from tstitch.jobs.sweep import sweep
from tstitch.models.nets.dit import DiT


@pytest.fixture(scope="module")
def latent_pair(tmp_path_factory):
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("latent")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                  norm_num_groups=8, sample_size=16, scaling_factor=0.18215).save_pretrained(root / "vae")
    paths = {}
    for name, hidden in (("small", 32), ("large", 64)):
        net = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=hidden, depth=2, num_heads=4)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
        paths[name] = root / f"{name}.pt"
        torch.save({"ema": net.state_dict(), "model": net.state_dict()}, paths[name])  # DiT train.py layout
    return root, paths


def test_sweep_on_dit_latents_with_a_vae(latent_pair):
    root, paths = latent_pair
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=[
            "stitch=dit_s_xl", "debug=tiny", "metric=none", "guidance.scale=1.5", "sweep.first=[0.0,0.4,1.0]"])
    with open_dict(cfg):
        for name, hidden in (("small", 32), ("large", 64)):
            m = cfg.stitch.members[name]
            m.net.update(input_size=8, hidden_size=hidden, depth=2, num_heads=4)
            m.space.shape = [4, 8, 8]
            m.checkpoint = str(paths[name])
            m.codec = str(root / "vae")
    rows, grids, members, facts = sweep(cfg)
    assert facts["decoder"] == str(root / "vae") and facts["warmup_seconds"] > 0
    assert facts["metric"] is None and [m.cfg_channels for m in members] == [3, 3]
    assert [r["nfe"] for r in rows] == [[0, 3], [1, 2], [3, 0]]
    assert all(g.shape == (8, 3, 16, 16) and g.dtype == torch.uint8 for g in grids)
    assert not torch.equal(grids[0], grids[2])
