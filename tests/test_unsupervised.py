"""Unsupervised PhyLL: label-free negatives, a rule that never reads a label, and its scoring
by the linear read-out against the same read-out on untrained blocks."""

import copy

import numpy as np
import pytest
import torch
from conftest import whole_and_resumed

from physnn.experiments.config import apply_overrides
from physnn.experiments.continual import run_continual
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import build_network, load_data, make_trainer, map_into_domain, run
from physnn.train.negatives import hybrid, mix, negative_generator, shuffle, smooth_masks

SLOTS = 3


def _batch(n: int = 16, side: int = 8) -> torch.Tensor:
    x = torch.rand(n, SLOTS + side * side, generator=torch.Generator().manual_seed(0))
    x[:, :SLOTS] = 0.25  # the label slots: no negative may touch them
    return x


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hybrid_joins_two_real_images_through_a_smooth_mask():
    x = _batch()
    neg = hybrid(x, _gen(), SLOTS, (8, 8))
    assert torch.equal(neg[:, :SLOTS], x[:, :SLOTS])
    img, neg_img = x[:, SLOTS:], neg[:, SLOTS:]
    from_self = neg_img == img
    from_other = torch.zeros_like(from_self)
    for shift in range(1, x.shape[0]):  # the partner is one fixed cyclic shift of the batch
        if torch.all((neg_img == img) | (neg_img == img.roll(-shift, 0))):
            from_other = neg_img == img.roll(-shift, 0)
            break
    assert torch.all(from_self | from_other)  # every pixel is one of the two images'
    assert from_self.float().mean() > 0.2 and from_other.float().mean() > 0.2
    assert torch.equal(neg, hybrid(x, _gen(), SLOTS, (8, 8)))  # the generator is the only randomness


def test_smooth_masks_have_large_regions():
    masks = smooth_masks(64, (28, 28), _gen())
    same = (masks[:, :, 1:] == masks[:, :, :-1]).float().mean()
    raw = (torch.rand(64, 28, 28, generator=_gen()) > 0.5).float()
    raw_same = (raw[:, :, 1:] == raw[:, :, :-1]).float().mean()
    assert 0.45 < raw_same < 0.55  # a pixel's neighbour agrees half the time without blur
    assert same > 0.85  # with it, regions span many pixels
    assert 0.3 < masks.mean() < 0.7


def test_shuffle_keeps_every_feature_distribution_and_breaks_the_rows():
    x = _batch()
    neg = shuffle(x, _gen(), SLOTS)
    assert torch.equal(neg[:, :SLOTS], x[:, :SLOTS])
    assert torch.equal(neg[:, SLOTS:].sort(0).values, x[:, SLOTS:].sort(0).values)
    assert not torch.equal(neg, x)


def test_mix_lies_between_two_different_samples():
    x = _batch()
    neg = mix(x, _gen(), SLOTS)
    assert torch.equal(neg[:, :SLOTS], x[:, :SLOTS])
    img, neg_img = x[:, SLOTS:], neg[:, SLOTS:]
    shifts = [s for s in range(1, x.shape[0])
              if torch.all((neg_img >= torch.minimum(img, img.roll(-s, 0)) - 1e-6)
                           & (neg_img <= torch.maximum(img, img.roll(-s, 0)) + 1e-6))]
    assert shifts  # each negative is between its sample and one other of the batch
    assert (neg_img - img).abs().amax(1).min() > 0.05  # and never the sample itself


def test_negatives_by_name_and_their_errors():
    assert negative_generator("auto", (8, 8)) is hybrid
    assert negative_generator("auto", None) is shuffle
    with pytest.raises(ValueError, match="allowed: auto, hybrid, shuffle, mix"):
        negative_generator("cutout", None)
    with pytest.raises(ValueError, match="needs image data"):
        hybrid(_batch(), _gen(), SLOTS, None)
    one = _batch(1)
    torch.testing.assert_close(mix(one, _gen(), SLOTS), one)  # a lone sample is its own partner


def _unsupervised(tiny_config, **train):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(method="phyll-unsupervised", readout="linear", **train)
    return cfg


def test_training_never_reads_a_label(tiny_config):
    cfg = apply_overrides(_unsupervised(tiny_config), [])
    raw = load_data(cfg, 0)
    weights = []
    for labels in (raw.y_train, raw.y_train.flip(0)):  # the labels scrambled: nothing changes
        net = build_network(cfg, raw.n_features, 0)
        data = map_into_domain(raw, net.blocks[0].device.spec.domain)
        trainer = make_trainer(cfg, net, data.n_classes, 0, data.label_width, data.image_shape)
        for _ in range(2):
            trainer.train_epoch(data.x_train, labels)
        weights.append([p.detach().clone() for p in net.parameters()])
        with pytest.raises(ValueError, match="scored by the linear read-out"):
            trainer.predict(data.x_test)
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_a_run_reports_the_read_out_beside_untrained_blocks(tiny_config, tmp_path):
    cfg = _unsupervised(tiny_config, epochs=3, eval_every=3)
    r = run(cfg, tmp_path / "u.h5", progress=False)
    ref = r.record["reference"]
    untrained = ref["linear_readout_untrained_test_acc"]
    assert 0.1 < untrained <= 1.0  # a real read-out of real measurements, above chance (0.1)
    m = r.record["metrics"]
    assert m["test_acc"][-1] == m["test_acc_linear"][-1]  # scored by the read-out
    assert np.all(np.asarray(m["loss"])[-1] < np.log(2))  # each block tells real from corrupted
    assert read_run(tmp_path / "u.h5")["reference"]["linear_readout_untrained_test_acc"] == untrained


def test_several_goodness_directions_change_the_loss_and_replay_from_the_seed(tiny_config):
    losses = {}
    for k in (1, 4, 4):
        cfg = apply_overrides(_unsupervised(tiny_config, directions=k), [])
        raw = load_data(cfg, 0)
        net = build_network(cfg, raw.n_features, 0)
        data = map_into_domain(raw, net.blocks[0].device.spec.domain)
        trainer = make_trainer(cfg, net, data.n_classes, 0, data.label_width, data.image_shape)
        assert len(trainer.directions) == (0 if k == 1 else len(net.blocks))
        got = trainer.train_epoch(data.x_train, data.y_train)
        assert losses.setdefault(k, got) == got  # rebuilt from the seed: the same directions
    assert losses[1] != losses[4]


def test_a_resumed_unsupervised_run_equals_an_uninterrupted_one(tiny_config, tmp_path):
    cfg = _unsupervised(tiny_config, epochs=2, eval_every=2, directions=3)
    full, resumed = (r.record for r in whole_and_resumed(cfg, tmp_path))
    for key in ("loss", "test_acc"):
        np.testing.assert_array_equal(full["metrics"][key], resumed["metrics"][key])
    assert full["reference"] == resumed["reference"]


def test_settings_that_do_not_fit_are_refused(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="scored by the linear read-out only"):
        apply_overrides(tiny_config, ["train.method=phyll-unsupervised"])
    with pytest.raises(ValueError, match="train.negatives must be one of"):
        apply_overrides(tiny_config, ["train.negatives=cutout"])
    # the two settings together, in either order
    for order in (["train.method=phyll-unsupervised", "train.readout=linear"],
                  ["train.readout=linear", "train.method=phyll-unsupervised"]):
        assert apply_overrides(tiny_config, order).train.method == "phyll-unsupervised"
    with pytest.raises(ValueError, match="phyll-unsupervised has none"):
        run_continual(_unsupervised(tiny_config), tmp_path / "c.h5", arm="phyll-unsupervised",
                      progress=False)
