"""Harder negatives (``train.wrong_label``, ``train.negatives_per_positive``) and input-side
augmentation (``train.augment``, ``train.augment_size``) for the labelled local rules
(issue 21): what each chooses, what it costs in device queries, that the defaults are the
rule as it was, number for number, and that a resumed run equals an uninterrupted one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import refused_in_one_line, whole_and_resumed

from physnn.core.device import Domain
from physnn.data import load_digits
from physnn.experiments.config import load_config
from physnn.experiments.runner import build_network, make_trainer, run
from physnn.train.augment import jitter_features, make_augment, shift_images
from physnn.train.phyll import (
    hardest_wrong_labels,
    overlay_label,
    phyll_loss,
    wrong_label_sets,
    wrong_labels,
)

N = 300
"""Training samples of the trainer-level tests (the digits' first 300)."""


def _cfg(tiny_config, **train):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(eval_train=False, **train)
    return load_config(cfg)


def _setup(tiny_config, seed=0, **train):
    """A trainer on the first ``N`` digits (their image shape passed, as the runner does)."""
    cfg = _cfg(tiny_config, **train)
    data = load_digits(seed=seed)
    net = build_network(cfg, data.n_features, seed)
    trainer = make_trainer(cfg, net, data.n_classes, seed, data.label_width, data.image_shape)
    return data.x_train[:N], data.y_train[:N], net, trainer


def _noise_states(net) -> list[list[torch.Tensor]]:
    return [[g.get_state() for g in d._generators.values()] for d in net.devices]


def _queries(net) -> int:
    return sum(d.accounting.samples for d in net.devices)


# -- which wrong labels -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_hard_labels_are_the_most_plausible_wrong_ones_and_leave_the_noise(tiny_config, k):
    x, y, net, trainer = _setup(tiny_config, wrong_label="hard", negatives_per_positive=k)
    trainer.train_epoch(x, y)  # a trained network: its scores separate the labels
    before = _noise_states(net)
    got = trainer.negative_labels(x, y, None, None)
    assert all(torch.equal(a, b) for sa, sb in zip(before, _noise_states(net), strict=True)
               for a, b in zip(sa, sb, strict=True))  # measured on a copy of the streams
    with net.evaluating():
        scores = trainer.scores(x)
    assert got.shape == (N, k) and not (got == y[:, None]).any()
    masked = scores.clone()
    masked[torch.arange(N), y] = -torch.inf
    for j in range(k):  # the j-th most plausible wrong label, by hand
        best = masked.argmax(1)
        assert torch.equal(got[:, j], best)
        masked[torch.arange(N), best] = -torch.inf
    assert (got[:, 0] != scores.argmax(1)).sum() < N  # not blind to the scores: often argmax


def test_mixed_scores_only_the_samples_it_makes_hard(tiny_config):
    x, y, net, trainer = _setup(tiny_config, wrong_label="mixed", negatives_per_positive=2)
    y_rand = wrong_label_sets(y, 10, torch.Generator().manual_seed(3), 2)
    pick = torch.rand(N, generator=torch.Generator().manual_seed(4)) < 0.5
    q0 = _queries(net)
    got = trainer.negative_labels(x, y, y_rand, pick)
    assert _queries(net) - q0 == len(net.blocks) * int(pick.sum()) * 10
    assert torch.equal(got[~pick], y_rand[~pick])
    with net.evaluating():
        hard = hardest_wrong_labels(trainer.scores(x[pick]), y[pick], 2)
    assert torch.equal(got[pick], hard)


def test_k_negatives_are_stacked_negative_major_beside_their_positive(tiny_config, monkeypatch):
    x, y, net, trainer = _setup(tiny_config, negatives_per_positive=3, batch_size=100)
    seen = []
    monkeypatch.setattr(trainer, "train_batch",
                        lambda pos, neg: seen.append((pos, neg)) or [0.0, 0.0])
    trainer.train_epoch(x, y)
    assert len(seen) == 3
    for pos, neg in seen:
        b = pos.shape[0]
        assert neg.shape == (3 * b, pos.shape[1])
        for j in range(3):  # the j-th negatives of the batch, in the positives' order
            part = neg[j * b : (j + 1) * b]
            assert torch.equal(part[:, 10:], pos[:, 10:])
            assert (part[:, :10].argmax(1) != pos[:, :10].argmax(1)).all()
        labels = neg[:, :10].argmax(1).view(3, b)
        assert (labels.sort(0).values.diff(dim=0) != 0).all()  # K distinct per sample


def test_k_wrong_labels_are_distinct_never_true_and_uniform():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (20_000,), generator=gen)
    sets = wrong_label_sets(y, 10, gen, 4)
    assert sets.shape == (20_000, 4) and not (sets == y[:, None]).any()
    assert (sets.sort(1).values.diff(1) != 0).all()  # distinct within a sample
    shifts = (sets - y[:, None]) % 10  # 1..9, each about equally often
    freq = torch.bincount(shifts.flatten(), minlength=10).float() / shifts.numel()
    assert freq[0] == 0 and torch.allclose(freq[1:], torch.full((9,), 1 / 9), atol=0.01)
    every = wrong_label_sets(y[:50], 10, gen, 9)  # K = n_classes - 1: all the wrong labels
    assert torch.equal(every.sort(1).values + 0, torch.stack(
        [torch.tensor([c for c in range(10) if c != t]) for t in y[:50]]))
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(wrong_label_sets(y, 10, a, 1)[:, 0], wrong_labels(y, 10, b))  # K = 1
    top = hardest_wrong_labels(torch.tensor([[0.9, 0.5, 0.7, 0.1]]), torch.tensor([0]), 2)
    assert top.tolist() == [[2, 1]]


def test_the_loss_pairs_each_positive_with_each_of_its_negatives():
    g_pos = torch.tensor([0.5, 0.1, 0.3])
    g1, g2 = torch.tensor([0.2, 0.3, 0.0]), torch.tensor([0.6, 0.1, 0.4])
    both = phyll_loss(g_pos, torch.cat([g1, g2]), 4.0)  # negative-major, as train_epoch stacks
    assert both.item() == pytest.approx(
        (phyll_loss(g_pos, g1, 4.0) + phyll_loss(g_pos, g2, 4.0)).item() / 2, rel=1e-6)
    with pytest.raises(ValueError, match="do not pair"):
        phyll_loss(g_pos, torch.rand(4), 4.0)


# -- what it costs --------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "wrong_label", "k"), [
    ("phyll", "random", 3), ("phyll", "hard", 1), ("ff", "hard", 2),
])
def test_device_queries_per_epoch(tiny_config, method, wrong_label, k):
    """N (1 + K) per block for the positives and negatives, plus N * n_classes per block for
    the scoring that picks hard ones, all counted while training."""
    x, y, net, trainer = _setup(tiny_config, method=method, wrong_label=wrong_label,
                                negatives_per_positive=k, batch_size=128)
    q0 = _queries(net)
    trainer.train_epoch(x, y)
    hard = N * 10 if wrong_label == "hard" else 0
    assert _queries(net) - q0 == len(net.blocks) * (N * (1 + k) + hard)


def test_the_ledger_counts_hard_negatives_as_training(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=1, eval_every=1, eval_train=False)
    plain = run(cfg, tmp_path / "plain.h5", progress=False).record
    cfg["train"].update(wrong_label="hard", negatives_per_positive=2)
    hard = run(cfg, tmp_path / "hard.h5", progress=False).record
    n = int(plain["metrics"]["train_queries"][0]) // 4  # 2 blocks x (positive + negative)
    blocks = 2
    assert hard["metrics"]["train_queries"][0] == blocks * n * (1 + 2 + 10)
    a, b = plain["accounting"]["ledger"], hard["accounting"]["ledger"]
    assert b["queries_train"] == blocks * n * 13
    assert b["queries_eval"] == a["queries_eval"]  # evaluation is the same work as before
    assert b["flops_eval"] == a["flops_eval"]  # the scoring's FLOPs are training's
    assert b["flops_train_total"] > a["flops_train_total"]


# -- the defaults are the rule as it was ---------------------------------------------------------


def _old_train_epoch(trainer, x, y):
    """``PhyLL.train_epoch`` as it was before these knobs (commit d6ef1ea), verbatim."""
    s = trainer.s
    y_neg = wrong_labels(y, s.n_classes, trainer.gen)
    n = x.shape[0]
    order = torch.randperm(n, generator=trainer.gen).to(x.device)
    bs = n if s.batch_size <= 0 else s.batch_size
    for start in range(0, n, bs):
        idx = order[start : start + bs]
        xb = x[idx]
        pos = overlay_label(xb, y[idx], s.n_classes, s.label_amplitude, s.label_width)
        neg = overlay_label(xb, y_neg[idx], s.n_classes, s.label_amplitude, s.label_width)
        trainer.train_batch(pos, neg)


@pytest.mark.parametrize(("method", "batch_size"), [("phyll", 0), ("phyll", 128), ("ff", 128)])
def test_defaults_train_exactly_as_before(tiny_config, method, batch_size):
    explicit = {"wrong_label": "random", "negatives_per_positive": 1, "augment": "none",
                "augment_size": 0.0}
    x, y, net_new, new = _setup(tiny_config, method=method, batch_size=batch_size, **explicit)
    _, _, net_old, old = _setup(tiny_config, method=method, batch_size=batch_size)
    for _ in range(2):
        new.train_epoch(x, y)
        _old_train_epoch(old, x, y)
    for (name, a), b in zip(net_new.state_dict().items(), net_old.state_dict().values(),
                            strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name
    assert dict(new.flops.totals) == dict(old.flops.totals)
    assert torch.equal(new.gen.get_state(), old.gen.get_state())


# -- augmentation ---------------------------------------------------------------------------------


def test_shift_moves_each_image_within_s_pixels_and_keeps_the_label_slots():
    data = load_digits(seed=0)
    x = overlay_label(data.x_train[:64], data.y_train[:64], 10)  # labels in the slots
    gen = torch.Generator().manual_seed(1)
    out = shift_images(x, gen, 10, (8, 8), 2, fill=0.0)
    assert torch.equal(out[:, :10], x[:, :10])
    images, moved = x[:, 10:].reshape(-1, 8, 8), out[:, 10:].reshape(-1, 8, 8)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = []
    for i in range(64):  # which offset in [-2, 2]^2 reproduces the output, by hand
        fits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(moved[i], padded[i, 2 - dy : 10 - dy, 2 - dx : 10 - dx])]
        assert fits, f"image {i} is not a shift of its input"
        offsets.append(fits[0])
    assert len(set(offsets)) > 10  # offsets drawn per image, not one for the batch
    assert not torch.equal(out, shift_images(x, gen, 10, (8, 8), 2, fill=0.0))  # fresh draws


def test_jitter_stays_in_the_domain_and_keeps_the_label_slots():
    gen = torch.Generator().manual_seed(0)
    domain = Domain(-1.0, 2.0)
    x = domain.from_unit(torch.rand(500, 16, generator=gen))
    x[:, :4] = 0.0  # label slots
    x[:5, 4:] = domain.hi  # at the edge: clamped, never past it
    small = jitter_features(x, gen, 4, 0.02, domain)
    assert torch.equal(small[:, :4], x[:, :4])
    assert (small >= domain.lo).all() and (small <= domain.hi).all()
    unit_in, unit_out = ((t[5:, 4:] - domain.lo) / 3 for t in (x, small))
    rel = unit_out / unit_in - 1
    inside = unit_out < 1  # not clamped
    assert rel[inside].std().item() == pytest.approx(0.02, rel=0.1)
    wild = jitter_features(x, gen, 4, 3.0, domain)
    assert (wild >= domain.lo).all() and (wild <= domain.hi).all()
    levels = Domain(levels=(0.0, 1.0, 2.0, 3.0))  # a discrete domain keeps its levels
    xl = levels.from_unit(torch.rand(50, 8, generator=gen))
    out = jitter_features(xl, gen, 2, 0.5, levels)
    assert levels.violations(out).sum() == 0


def test_jitter_moves_the_feature_that_digits_encode_not_one_digit():
    """With ``data.digits`` the noise moves each feature on its 16 steps and writes it as
    digits again: every output is a valid digit pair whose feature moved by about sigma
    (relative), the label slots and the padding stay, and no feature ever jumps by a
    leading digit's worth (4 steps) under small noise, as independent digits would."""
    from physnn.data.dataset import DigitLayout

    gen = torch.Generator().manual_seed(0)
    domain = Domain(levels=(0.0, 1.0, 2.0, 3.0))
    layout = DigitLayout(digits=2, levels=4, n_features=5)
    u = torch.randint(4, 16, (2000, 5), generator=gen) / 15  # features away from 0
    x = torch.cat([torch.zeros(2000, 3), domain.from_unit(layout.encode(u)),
                   torch.zeros(2000, 2)], 1)  # 3 label slots, 10 digit inputs, 2 padding
    out = jitter_features(x, gen, 3, 0.05, domain, layout)
    assert domain.violations(out).sum() == 0
    assert torch.equal(out[:, :3], x[:, :3]) and torch.equal(out[:, 13:], x[:, 13:])
    moved = torch.round((layout.decode(out[:, 3:13] / 3) - u) * 15)
    assert 0.05 < (moved != 0).float().mean().item() < 0.5  # some features moved ...
    assert moved.abs().max().item() <= 3  # ... by a few steps at most, never by a digit's 4
    rel = (layout.decode(out[:, 3:13] / 3) / u - 1)
    assert rel.std().item() == pytest.approx(0.05, rel=0.3)  # sigma, seen through 16 steps
    assert torch.equal(jitter_features(x, gen, 3, 0.0, domain, layout), x)
    fn = make_augment("jitter", 0.05, 3, None, domain, layout)
    assert fn is not None and torch.equal(fn(x, torch.Generator().manual_seed(5)),
                                          jitter_features(x, torch.Generator().manual_seed(5),
                                                          3, 0.05, domain, layout))


def test_a_run_on_digit_inputs_jitters_every_members_features_whole():
    """The runner hands ``Dataset.digit_layout`` to the rule: each ensemble member of
    ``vowels-microwave-digits`` with ``train.augment = "jitter"`` moves whole features."""
    from physnn.experiments.runner import TrainSession

    cfg = load_config("vowels-microwave-digits").merged(
        {"data": {"n_speakers": 10}, "train": {"augment": "jitter", "augment_size": 0.1}})
    session = TrainSession(cfg, 0, "cpu", progress=False)
    layout, x = session.data.digit_layout, session.data.x_train
    assert layout is not None and len(session.trainer.members) == 3
    domain = session.net.blocks[0].device.spec.domain
    for member in session.trainer.members:
        gen = torch.Generator()
        gen.set_state(member.gen.get_state())
        want = jitter_features(x, gen, session.data.label_slots, 0.1, domain, layout)
        assert torch.equal(member.augmented(x), want)


def test_augmentation_changes_training_batches_only(tiny_config):
    x, y, net, trainer = _setup(tiny_config, augment="shift")
    assert not torch.equal(trainer.augmented(x), x)
    _, _, _, plain = _setup(tiny_config)
    plain.net = net  # the same network, without augmentation
    with net.evaluating():  # each on the same copy of the noise streams
        augmented_rule = trainer.scores(x)
    with net.evaluating():
        assert torch.equal(augmented_rule, plain.scores(x))
    state = trainer.gen.get_state()
    with net.evaluating():
        trainer.predict(x)
    assert torch.equal(trainer.gen.get_state(), state)  # nothing drawn for evaluation


# -- resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [
    {"wrong_label": "hard", "negatives_per_positive": 2, "augment": "shift", "batch_size": 500},
    {"wrong_label": "mixed", "augment": "jitter", "augment_size": 0.05, "method": "ff"},
])
def test_resumed_run_equals_uninterrupted(tiny_config, tmp_path, train):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=3, eval_every=3, eval_train=False, **train)
    full, resumed = whole_and_resumed(cfg, tmp_path)
    for key in ("loss", "test_acc", "train_queries", "eval_queries"):
        np.testing.assert_array_equal(full.record["metrics"][key], resumed.record["metrics"][key])
    np.testing.assert_array_equal(full.record["predictions"]["test_pred"],
                                  resumed.record["predictions"]["test_pred"])
    assert full.record["accounting"]["digital"] == resumed.record["accounting"]["digital"]


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("train", "message"), [
    ({"wrong_label": "worst"}, r"train.wrong_label must be one of random, hard, mixed, got 'worst'"),
    ({"augment": "rotate"}, r"train.augment must be one of none, shift, jitter, got 'rotate'"),
    ({"negatives_per_positive": 0}, r"train.negatives_per_positive \(.*\) must be >= 1, got 0"),
    ({"augment": "jitter", "augment_size": -0.1}, r"train.augment_size \(.*\) must be >= 0"),
    ({"wrong_label": "hard", "method": "backprop"},
     r"train.wrong_label = 'hard' applies to train.method phyll or ff .* not 'backprop'"),
    ({"negatives_per_positive": 2, "method": "phyll-unsupervised", "readout": "linear"},
     r"train.negatives_per_positive = 2 applies to train.method phyll or ff .* not "
     r"'phyll-unsupervised'"),
    ({"wrong_label": "mixed", "method": "pat"}, r"not 'pat'"),
    ({"augment": "shift", "method": "pat"},
     r"train.augment = 'shift' applies to train.method phyll, ff, phyll-unsupervised, not 'pat'"),
    ({"augment_size": 2}, r"train.augment_size = 2 needs train.augment = 'shift' or 'jitter'"),
    ({"augment": "shift", "augment_size": 1.5},
     r"train.augment_size for train.augment = 'shift' must be a whole number of pixels, got 1.5"),
])
def test_config_refusals_are_one_line(tiny_config, train, message):
    refused_in_one_line(tiny_config, train, message)


def test_refusals_that_need_the_data_are_one_line(tiny_config):
    with pytest.raises(ValueError, match=r"negatives_per_positive .* must be in \[1, "
                                         r"n_classes - 1 = 9\], got 10") as info:
        _setup(tiny_config, negatives_per_positive=10)
    assert "\n" not in str(info.value)
    domain = Domain()
    with pytest.raises(ValueError, match="'shift' needs image data .* use 'jitter'"):
        make_augment("shift", 0, 7, None, domain)
    with pytest.raises(ValueError, match=r"whole number of pixels in \[1, 7\] for \(8, 8\)"):
        make_augment("shift", 8, 10, (8, 8), domain)
    assert make_augment("none", 0, 10, (8, 8), domain) is None
