import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from physnn.data import load_digits
from physnn.experiments.runner import build_network, make_trainer
from physnn.train.phyll import goodness, overlay_label, phyll_loss, wrong_labels


def test_overlay_sets_label_slot_and_keeps_the_rest():
    x = torch.rand(4, 7) * 0.5 + 0.1
    y = torch.tensor([0, 2, 1, 2])
    out = overlay_label(x, y, n_classes=3, amplitude=0.9)
    expected = torch.zeros(4, 3)
    expected[torch.arange(4), y] = 0.9
    assert torch.equal(out[:, :3], expected)
    assert torch.equal(out[:, 3:], x[:, 3:])
    assert x[0, 0] != 0  # the input itself is untouched


def test_overlay_batch_max_reproduces_the_paper():
    x = torch.tensor([[0.1, 0.2, 0.3, -0.8], [0.0, 0.0, 0.5, 0.2]])
    out = overlay_label(x, torch.tensor([1, 0]), n_classes=2, amplitude="batch_max")
    assert out[0, 1] == pytest.approx(0.8) and out[1, 0] == pytest.approx(0.8)
    assert out[0, 0] == 0 and out[1, 1] == 0


@given(st.lists(st.integers(0, 6), min_size=1, max_size=200), st.integers(0, 2**31 - 1))
def test_negative_label_is_never_the_true_one(labels, seed):
    y = torch.tensor(labels)
    neg = wrong_labels(y, 7, torch.Generator().manual_seed(seed))
    assert not (neg == y).any()
    assert ((neg >= 0) & (neg < 7)).all()


def test_negative_labels_are_uniform_over_wrong_classes_and_redrawn():
    gen = torch.Generator().manual_seed(0)
    y = torch.full((60_000,), 3)
    neg = wrong_labels(y, 5, gen)
    counts = torch.bincount(neg, minlength=5).float() / y.numel()
    assert counts[3] == 0
    assert torch.allclose(counts[[0, 1, 2, 4]], torch.full((4,), 0.25), atol=0.01)
    assert not torch.equal(neg, wrong_labels(y, 5, gen))  # a new draw each epoch


def test_goodness_hand_computed():
    h = torch.tensor([[3.0, -4.0], [0.0, 2.0]])
    zeta = torch.tensor([1.0, 0.0])
    assert goodness(h, zeta).tolist() == pytest.approx([0.6, 0.0])
    zeta2 = torch.tensor([0.6, 0.8])
    assert goodness(h, zeta2).tolist() == pytest.approx([(1.8 + 3.2) / 5, 0.8])


def test_loss_hand_computed():
    g_pos, g_neg = torch.tensor([0.5, 0.1]), torch.tensor([0.2, 0.3])
    expected = (math.log1p(math.exp(-4 * 0.3)) + math.log1p(math.exp(4 * 0.2))) / 2
    assert phyll_loss(g_pos, g_neg, 4.0).item() == pytest.approx(expected, rel=1e-6)


def _setup(cfg, seed=0):
    data = load_digits(seed=seed)
    net = build_network(cfg, data.n_features, seed)
    return data, net, make_trainer(cfg, net, data.n_classes, seed)


@pytest.mark.parametrize("batch_size", [0, 500])
def test_device_queried_once_per_sample_per_block_per_batch(tiny_config, batch_size):
    tiny_config["train"]["batch_size"] = batch_size
    tiny_config["train"]["inner_steps"] = 7
    data, net, trainer = _setup(tiny_config)
    n = data.x_train.shape[0]
    trainer.train_epoch(data.x_train, data.y_train)
    batches = 1 if batch_size == 0 else math.ceil(n / batch_size)
    for dev in net.devices:
        assert dev.accounting.samples == 2 * n  # positives and negatives, not x inner steps
        assert dev.accounting.calls == 2 * batches


def test_only_digital_parameters_learn_and_loss_falls(tiny_config):
    data, net, trainer = _setup(tiny_config)
    zetas = [b.zeta.clone() for b in net.blocks]
    weights = [b.linear.weight.detach().clone() for b in net.blocks]
    first = trainer.train_epoch(data.x_train, data.y_train)
    for _ in range(5):
        last = trainer.train_epoch(data.x_train, data.y_train)
    assert all(torch.equal(z, b.zeta) for z, b in zip(zetas, net.blocks, strict=True))
    assert all(not torch.equal(w, b.linear.weight) for w, b in zip(weights, net.blocks, strict=True))
    assert all(b < a for a, b in zip(first, last, strict=True))
    assert trainer.flops.totals["train"] > 0


def test_prediction_sums_goodness_over_blocks_for_every_label(tiny_config):
    tiny_config["device"]["camera"] = []  # noise-free, so a second pass measures the same
    data, net, trainer = _setup(tiny_config)
    for _ in range(3):
        trainer.train_epoch(data.x_train, data.y_train)
    x = data.x_test[:5]
    before = sum(d.accounting.samples for d in net.devices)
    scores = trainer.scores(x)
    assert scores.shape == (5, 10)
    # C candidate labels -> C device passes per sample per block
    assert sum(d.accounting.samples for d in net.devices) - before == 5 * 10 * len(net.blocks)
    lab = torch.full((5,), 4)
    hs = net(overlay_label(x, lab, 10, 1.0))
    by_hand = sum(goodness(h, b.zeta) for h, b in zip(hs, net.blocks, strict=True))
    assert torch.allclose(scores[:, 4], by_hand, atol=1e-6)
    assert torch.equal(trainer.predict(x), scores.argmax(1))


def test_block_output_is_mapped_into_next_domain(tiny_config):
    data, net, _ = _setup(tiny_config)
    h = torch.randn(6, 32) * 10
    x = net.blocks[0].to_next(h, net.blocks[1].device.spec.domain)
    assert x.min() >= 0 and x.max() <= 1
    assert torch.allclose(x.amin(1), torch.zeros(6)) and torch.allclose(x.amax(1), torch.ones(6))


def _label_by_label(trainer, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Scoring as it was before batching: one device call per batch, label and block."""
    c, blocks, s = trainer.s.n_classes, trainer.net.blocks, trainer.s
    out = torch.empty(x.shape[0], c)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            for label in range(c):
                z = overlay_label(xb, torch.full((xb.shape[0],), label), c, s.label_amplitude,
                                  s.label_width)
                total = 0
                for k, block in enumerate(blocks):
                    h = block.linear(block.features(z))
                    total = total + trainer.block_goodness(block, h)
                    if k + 1 < len(blocks):
                        z = trainer.to_next(k, h)
                out[start : start + xb.shape[0], label] = total
    return out


@pytest.mark.parametrize(
    "method, outputs, max_rows",
    [("phyll", None, 4096), ("ff", None, 4096), ("phyll", None, 70), ("phyll", "readout", 4096)],
)
def test_batched_scores_equal_label_by_label_calls_bit_for_bit(tiny_config, method, outputs,
                                                               max_rows):
    """Noisy camera (shot, readout, quantisation) of 7x7 = 49 pixels: a call's normal draws
    are not a multiple of 16 (torch's CPU randn redraws the tail of every call), so one
    plain call of all labels would draw different noise; scores must not."""
    import copy

    tiny_config["device"]["camera_shape"] = [7, 7]
    tiny_config["train"]["method"] = method
    if outputs:  # a wrapped device: the generic call-by-call path of Device
        tiny_config["device"]["outputs"] = [{"kind": "readout", "sigma": 0.05}]
    data, net, trainer = _setup(tiny_config)
    trainer.train_epoch(data.x_train, data.y_train)
    twin = copy.deepcopy(trainer)  # same weights, same random streams
    x = data.x_test[:33]
    got = trainer.scores(x, batch_size=23, max_rows=max_rows)
    want = _label_by_label(twin, x, batch_size=23)
    assert torch.equal(got, want)
    for a, b in zip(trainer.net.devices, twin.net.devices, strict=True):
        assert a.accounting.samples == b.accounting.samples == 2 * data.x_train.shape[0] + 330
        assert a.accounting.calls == b.accounting.calls
    assert torch.equal(trainer.scores(x, max_rows=max_rows), _label_by_label(twin, x))  # streams
