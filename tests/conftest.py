import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)  # two cores: one thread per process is fastest for these small nets


@pytest.fixture(autouse=True)
def _restore_dtype():
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(params=["HF_HUB_OFFLINE", "no route"])
def hub_offline(request, monkeypatch):
    """The Hugging Face hub out of reach: by the HF_HUB_OFFLINE flag, or with no flag and no route (our probe must
    stop a load before the hub's ~25 s of retries)."""
    import huggingface_hub

    if request.param == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        return
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("tstitch.codecs.socket.create_connection", refuse)
