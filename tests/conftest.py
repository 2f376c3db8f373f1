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
