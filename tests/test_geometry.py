"""The zero-shot embedding geometry of ``condu-bench world-check --geometry``: hand-computed on a fixed embedding,
and the command end to end on the micro CLIP."""

import math

import pytest
import torch

from condu_bench.synthetic import geometry


class IdentityImages(torch.nn.Module):
    """A 'CLIP' whose image features are the input vectors themselves, at temperature 50."""

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(50.0)))

    def encode_image(self, images):
        return images


def test_domain_geometry_on_a_hand_made_embedding(monkeypatch):
    from condu_bench.models import classifier
    from condu_bench.synthetic import domains

    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # pairwise cosines 0, 0.6, 0.8
    # label 0 and 1 on their own class; the label-2 image lies on class 0 (a confident error)
    items = [(torch.tensor([1.0, 0.0]), 0), (torch.tensor([0.0, 1.0]), 1), (torch.tensor([1.0, 0.0]), 2)]
    monkeypatch.setattr(classifier, "text_classifier", lambda *args, **kwargs: classes)
    monkeypatch.setattr(domains, "domain_classnames", lambda name: ["a", "b", "c"])
    monkeypatch.setattr(domains, "make_domain_split", lambda *args, **kwargs: items)
    g = geometry.domain_geometry(IdentityImages(), None, lambda x: x, "shapes", n_per_class=1, batch_size=2)
    assert g.num_classes == 3
    assert g.text_cos == pytest.approx((0.0 + 0.6 + 0.8) / 3)
    assert g.image_text_cos == pytest.approx((1.0 + 1.0 + 0.6) / 3)
    # margins: 1 - 0.6, 1 - 0.8, 1 - 0.6
    assert g.margin == pytest.approx((0.4 + 0.2 + 0.4) / 3)
    assert g.accuracy == pytest.approx(200 / 3)
    assert g.temperature == pytest.approx(50.0) and g.logit_gap == pytest.approx(50.0 / 3)
    # cross-entropy smoothed by 0.2 over 3 classes is smallest at p = 0.8667 vs 0.0667: a logit gap of ln 13
    assert g.smoothed_gap(0.2) == pytest.approx(math.log(13)) and g.smoothed_gap(0.0) == math.inf
    # the probe (fitted here to the same three images) cannot split the two identical images of classes 0 and 2
    assert g.probe_accuracy == pytest.approx(200 / 3)
    table = geometry.geometry_table([("m", g)], 0.2)
    assert "| m | shapes | 3 | 0.47 | 0.87 | 0.333 | 16.67 | 50.0 | 66.7 | 66.7 | 2.56 |" in table
    # the header names the shots the probe was fitted to (the default 16 here)
    assert g.probe_shots == 16 and "| 16-shot linear probe % |" in table
    no_probe = geometry.domain_geometry(IdentityImages(), None, lambda x: x, "shapes", n_per_class=1, batch_size=2,
                                        probe_shots=0)
    assert no_probe.probe_accuracy is None and "| linear probe % |" in geometry.geometry_table([("m", no_probe)], 0.2)


def test_the_linear_probe_separates_what_the_features_separate_and_nothing_else():
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=1)
    labels = torch.arange(4).repeat_interleave(16)
    test_labels = torch.arange(4).repeat_interleave(50)

    def features(lab, noise):
        return centres[lab] + noise * torch.randn(len(lab), 8, generator=generator)

    train, test = features(labels, 0.05), features(test_labels, 0.05)
    assert geometry.linear_probe_accuracy(train, labels, test, test_labels) == 100.0
    # the penalty is chosen on held-out shots. Two classes apart by 1 along a noisy axis (std 2) and by 0.3 along a
    # quiet one (std 0.01): a crushing penalty leaves the class-mean direction, which the noisy axis dominates
    two, two_test = torch.arange(2).repeat_interleave(16), torch.arange(2).repeat_interleave(100)

    def anisotropic(lab):
        return torch.stack([lab * 1.0 + 2.0 * torch.randn(len(lab), generator=generator),
                            lab * 0.3 + 0.01 * torch.randn(len(lab), generator=generator)], dim=1)

    train2, test2 = anisotropic(two), anisotropic(two_test)
    assert geometry.linear_probe_accuracy(train2, two, test2, two_test, weight_decays=(100.0,)) < 80.0
    assert geometry.linear_probe_accuracy(train2, two, test2, two_test, weight_decays=(100.0, 1e-5)) == 100.0
    # labels unrelated to the features: the probe fits its shots and is near chance (25 %) on the test set
    noise_train, noise_test = torch.randn(64, 8, generator=generator), torch.randn(200, 8, generator=generator)
    assert geometry.linear_probe_accuracy(noise_train, labels, noise_test, test_labels) < 40.0


def test_the_smoothed_gap_is_where_smoothed_cross_entropy_is_smallest():
    import torch.nn.functional as F

    g = geometry.DomainGeometry("d", 6, 0.0, 0.0, 0.0, 0.0, 1.0)
    gaps = torch.linspace(0.5, 8.0, 1501)
    logits = torch.zeros(len(gaps), 6)
    logits[:, 0] = gaps  # the true class ahead of five equal others by the gap
    losses = F.cross_entropy(logits, torch.zeros(len(gaps), dtype=torch.long), label_smoothing=0.2, reduction="none")
    assert float(gaps[losses.argmin()]) == pytest.approx(g.smoothed_gap(0.2), abs=0.01)


MICRO = ["model.arch=condu-micro-vit", "model.pretrained=none", "scenario.options.n_test_per_class=3"]


def test_world_check_geometry_prints_each_domain_of_the_benchmark(capsys):
    from condu_bench.cli import main

    assert main(["world-check", "--geometry", "--pretrain-seeds", "0", *MICRO,
                 "scenario.options.order=[shapes,counts]"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| synthetic |")]
    assert [row.split("|")[2].strip() for row in rows] == ["shapes", "counts"]
    assert main(["world-check", "--geometry", "--b2n", "--pretrain-seeds", "0", *MICRO,
                 "scenario.options.domains=[colours]"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| synthetic |")]
    assert [row.split("|")[2:4] for row in rows] == [[" colours ", " 8 "]]
    assert 0.0 <= float(rows[0].split("|")[10]) <= 100.0  # the probe's accuracy
    assert main(["world-check", "--geometry", "--ranking"]) == 2
    assert "does not combine with --ranking" in capsys.readouterr().err
