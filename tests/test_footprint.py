"""What a run records of its members (tstitch/jobs/footprint.py, the paper's Table 8): parameters of the network and
of the condition encoder apart, their bytes in their dtype, the bytes of the checkpoint file(s) the network was
read from (a file whole; a diffusers model's weight files as diffusers picks them, from a directory or the hub
cache, never downloaded; None where unknown) and each allocation's peak CUDA memory."""
from types import SimpleNamespace

import pytest
import torch

from tstitch.jobs import footprint
from tstitch.models.nets.dit import DiT


def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=8,
                                norm_num_groups=8, attention_head_dim=2, sample_size=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


def test_a_training_checkpoint_counts_whole_and_unknowns_are_none(tmp_path, monkeypatch):
    """DiT's train.py file holds EMA and raw weights: its storage is the file's size (about twice the parameters'
    bytes, as the paper's 263 MB DiT-S); a URL counts its cached download, never fetches it; no file, no
    checkpoint, LoRA or a ControlNet on top: None."""
    net = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4)
    raw = {k: v.clone() for k, v in net.state_dict().items()}  # its own tensors (torch.save stores shared ones once)
    torch.save({"ema": net.state_dict(), "model": raw}, tmp_path / "dit.pt")
    size = (tmp_path / "dit.pt").stat().st_size
    count, nbytes = footprint.parameters(net)
    assert count == sum(p.numel() for p in net.parameters()) and nbytes == 4 * count
    assert footprint.storage({"family": "dit", "checkpoint": str(tmp_path / "dit.pt")}) == size > 2 * nbytes

    def offline(*args, **kwargs):
        raise AssertionError("no download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TSTITCH_CACHE", str(tmp_path / "cache"))
    url = {"family": "dit", "checkpoint": "https://example.org/models/dit.pt"}
    assert footprint.storage(url) is None  # not downloaded (yet)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "dit.pt").write_bytes(b"x" * 1234)
    assert footprint.storage(url) == 1234
    for entry in ({"family": "dit", "checkpoint": None}, {"family": "dit", "checkpoint": str(tmp_path / "gone.pt")},
                  {"family": "sd", "checkpoint": str(tmp_path / "dit.pt"), "lora": {"path": "x"}},
                  {"family": "sd", "checkpoint": str(tmp_path), "controlnet": {"source": "y"}}):
        assert footprint.storage(entry) is None, entry


@pytest.mark.parametrize("save,picked", [
    ({}, ["diffusion_pytorch_model.safetensors"]),
    ({"safe_serialization": False}, ["diffusion_pytorch_model.bin"]),
    ({"variant": "fp16"}, ["diffusion_pytorch_model.fp16.safetensors"]),
    ({"max_shard_size": "100KB"}, "sharded"),
])
def test_a_diffusers_directory_counts_the_weight_files_diffusers_reads(tmp_path, save, picked):
    """Of a diffusers model directory, the UNet subfolder's weights as ``from_pretrained`` picks them: the
    safetensors file, else the .bin, the entry's variant, or a sharded set's index and every shard; the config and
    another subfolder's files never."""
    tiny_unet().save_pretrained(tmp_path / "model" / "unet", **save)
    (tmp_path / "model" / "vae").mkdir()
    (tmp_path / "model" / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"v" * 999)
    entry = {"family": "sd", "checkpoint": str(tmp_path / "model"), "variant": save.get("variant")}
    found = footprint.files(entry)
    unet = tmp_path / "model" / "unet"
    if picked == "sharded":
        shards = sorted(unet.glob("diffusion_pytorch_model-*.safetensors"))
        assert len(shards) >= 2 and found == [unet / "diffusion_pytorch_model.safetensors.index.json", *shards]
    else:
        assert found == [unet / name for name in picked]
    assert footprint.storage(entry) == sum(f.stat().st_size for f in found)
    assert footprint.storage({**entry, "checkpoint": str(tmp_path / "nothing")}) is None


def test_a_hub_id_is_read_from_the_hub_cache_and_its_unet_source(tmp_path, monkeypatch):
    """A hub id's UNet weights from the hub cache (its snapshot of refs/main), also where the entry's ``unet`` names
    another repository (LCM-SDXL); a repository not in the cache: None, nothing fetched."""
    import huggingface_hub

    def snapshot(repo, files):
        root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text("abc123")
        for name, size in files.items():
            path = root / "snapshots" / "abc123" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"w" * size)

    snapshot("owner/model", {"unet/diffusion_pytorch_model.safetensors": 700, "unet/config.json": 10,
                             "text_encoder/model.safetensors": 300})
    snapshot("owner/lcm-unet", {"diffusion_pytorch_model.safetensors": 500})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert footprint.storage({"family": "sd", "checkpoint": "owner/model"}) == 700
    assert footprint.storage({"family": "sd", "checkpoint": "owner/model",
                              "unet": {"source": "owner/lcm-unet", "subfolder": None}}) == 500
    assert footprint.storage({"family": "sd", "checkpoint": "owner/absent"}) is None


def test_record_counts_network_and_encoder_apart_in_their_dtype():
    """A text-conditioned member: ``params`` is its per-step network, ``encoder_params`` its encoder (None for a
    member without one), ``param_bytes`` both in their dtype."""
    net = torch.nn.Linear(10, 10).to(torch.bfloat16)       # 110 parameters, 2 bytes each
    encoder = torch.nn.ModuleList([torch.nn.Linear(4, 5)])  # 25, 4 bytes each
    shared = torch.nn.Linear(3, 3)
    tied = torch.nn.Sequential(shared, shared)              # 12, counted once
    members = [SimpleNamespace(net=tied, encoder=None), SimpleNamespace(net=net, encoder=encoder)]
    out = footprint.record(members, [{"checkpoint": None}, {"checkpoint": None}])
    assert out == {"params": [12, 110], "param_bytes": [48, 220 + 100], "storage_bytes": [None, None],
                   "encoder_params": [None, 25]}
    assert "encoder_params" not in footprint.record(members[:1], [{}])


def test_peak_memory_is_each_keys_peak_reset_before_every_call(monkeypatch):
    """Fake CUDA counters: each call starts from a reset peak, a key keeps the highest of its calls, ``overall`` the
    highest of all, the warm-up's before the first call included; off a GPU nothing is read."""
    state = {"now": 100, "peak": 900}  # the warm-up peaked at 900

    def allocate(n):
        state["now"] += n
        state["peak"] = max(state["peak"], state["now"])
        state["now"] -= n

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=state["now"]))
    peak = footprint.PeakMemory("cuda:0")
    for key, n in (("a", 50), ("b", 300), ("a", 20)):
        with peak(key):
            allocate(n)
    assert (peak.get("a"), peak.get("b"), peak.get("c")) == (150, 400, None) and peak.overall() == 900
    cpu = footprint.PeakMemory("cpu")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: pytest.fail("read on a CPU"))
    with cpu("a"):
        pass
    assert cpu.get("a") is None and cpu.overall() is None
