"""Shared fixtures for keepfit tests: the tiny architecture, tiny images, synthetic pretraining data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    """Tiny models run faster on one intra-op thread than on two contended ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _isolated_torch_hub(tmp_path_factory, monkeypatch):
    """Never read or fill the user's torch hub cache from tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))


@pytest.fixture
def free_port() -> int:
    """A TCP port free on localhost, for process-group rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tiny_model_config() -> str:
    return "tiny"


@pytest.fixture
def tiny_model(tiny_model_config):
    import keepfit

    torch.manual_seed(0)
    return keepfit.create_model(tiny_model_config)


@pytest.fixture
def tiny_images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 48, 48, generator=generator)


@pytest.fixture(scope="session")
def synthetic_pretraining_data(tmp_path_factory) -> dict[str, object]:
    """A FLAIR-format CSV and a published MM-Retinal manifest version with learnable structure."""
    from keepfit.synthetic import publish_expert_manifest, write_flair_dataset

    root = tmp_path_factory.mktemp("pretraining-data")
    csv_path = write_flair_dataset(root / "flair", n_images=48, seed=0)
    registry, version = publish_expert_manifest(root / "mmretinal", n_pairs=16, seed=1)
    return {"csv": csv_path, "registry": registry, "version": version}


@pytest.fixture
def tiny_pretrain_overrides(synthetic_pretraining_data, tmp_path) -> dict[str, object]:
    data = synthetic_pretraining_data
    return {
        "model": "tiny",
        "flair.dataframes": [str(data["csv"])],
        "expert.registry_root": str(data["registry"]),
        "expert.version": data["version"],
        "output_dir": str(Path(tmp_path) / "run"),
        "batch_size": 8,
        "num_workers": 0,
        "device": "cpu",
        "amp": "off",
        "tensorboard": False,
        "progress_bar": False,
        "log_every": 1,
    }
