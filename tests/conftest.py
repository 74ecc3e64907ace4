import pytest
import torch

from physnn.experiments.config import load_config


@pytest.fixture
def tiny_config():
    """digits-optical shrunk so a run takes about a second, as plain data (nested dicts, as
    TOML gives them): every entry point takes that as well as an ExperimentConfig."""
    cfg = load_config("digits-optical").to_dict()
    cfg["device"]["camera_shape"] = [8, 8]
    cfg["network"]["hidden"] = [32, 32]
    cfg["train"].update(epochs=4, eval_every=2, inner_steps=3, lr=2e-3)
    return cfg


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and steadier
