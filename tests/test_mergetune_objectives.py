"""MergeTune's two objectives against hand computations on 2-d cases."""

import math

import pytest
import torch

from condu_bench import mergetune as mt


def test_released_path_points_are_the_references_arange():
    assert mt.released_path_points(5) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert mt.released_path_points(2) == pytest.approx([0.1, 0.6])
    assert mt.paper_path_points(5) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])


def released_case():
    image = torch.tensor([[1.0, 0.0]])
    labels = torch.tensor([0])
    learned = torch.tensor([[3.0, 4.0], [0.0, 2.0]], requires_grad=True)  # normalised: (0.6, 0.8), (0, 1)
    finetuned = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    zeroshot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return image, labels, learned, finetuned, zeroshot


def test_released_loss_matches_hand_computation():
    image, labels, learned, finetuned, zeroshot = released_case()
    out = mt.released_loss(image, labels, learned, finetuned, zeroshot, logit_scale=2.0, anchor_weight=10.0,
                           path_weight=1.0, path_points=(0.5,))
    task = math.log(1 + math.exp(-1.2))  # logits (2 * 0.6, 0)
    anchor = 1 - (0.6 + 1.0) / 2
    # t = 0.5: raw mid features (2, 2), (0, 1.5) are normalised after interpolating: logits (2 / sqrt 2, 0)
    path = math.log(1 + math.exp(-math.sqrt(2)))
    assert out.task.item() == pytest.approx(task, rel=1e-6)
    assert out.anchor.item() == pytest.approx(anchor, rel=1e-6)
    assert out.path.item() == pytest.approx(path, rel=1e-6)
    assert out.total.item() == pytest.approx(task + 10 * anchor + path, rel=1e-6)
    out.total.backward()
    assert finetuned.grad is None  # the fine-tuned prompt is a constant of the objective
    assert learned.grad is not None and learned.grad.abs().sum() > 0


def test_released_loss_averages_over_the_path_points():
    image, labels, learned, finetuned, zeroshot = released_case()
    one = [mt.released_loss(image, labels, learned, finetuned, zeroshot, 2.0, 0.0, 1.0, (t,)).path.item() for t in (0.1, 0.9)]
    both = mt.released_loss(image, labels, learned, finetuned, zeroshot, 2.0, 0.0, 0.5, (0.1, 0.9))
    assert both.path.item() == pytest.approx(sum(one) / 2, rel=1e-6)
    assert both.total.item() == pytest.approx(both.task.item() + 0.5 * both.path.item(), rel=1e-6)
    # interpolating raw features is not interpolating normalised ones: the normalised path would give another value
    assert one[0] != pytest.approx(mt.released_loss(image, labels, torch.nn.functional.normalize(learned, dim=-1),
                                                    finetuned, zeroshot, 2.0, 0.0, 1.0, (0.1,)).path.item(), rel=1e-4)


def quadratic_task(target):
    return lambda p: ((p["w"] - target) ** 2).sum()


def test_paper_loss_matches_hand_computation_value_and_gradient():
    target = torch.tensor([1.0, 2.0])
    w = torch.tensor([1.0, 1.0], requires_grad=True)
    zs, ft = {"w": torch.zeros(2)}, {"w": torch.tensor([2.0, 2.0])}
    out = mt.paper_loss(quadratic_task(target), {"w": w}, zs, ft, lam=0.5, beta=2.0, path_points=(0.0, 0.5))
    # task (0, -1) -> 1; ||w - zs||^2 = 2; path: alpha 0 -> ft (1, 0) -> 1, alpha 0.5 -> (1.5, 1.5) -> 0.5; mean 0.75
    assert out.task.item() == pytest.approx(1.0)
    assert out.distance.item() == pytest.approx(2.0)
    assert out.path.item() == pytest.approx(0.75)
    assert out.total.item() == pytest.approx(1.0 + 0.5 * 2.0 + 2.0 * 0.75)
    out.total.backward()
    # d task = 2(w - target) = (0, -2); d lambda-term = 2 lambda (w - zs) = (1, 1);
    # d path = beta * mean_alpha 2 alpha (ft + alpha (w - ft) - target) = 2 * (0 + (0.5, -0.5)) / 2 = (0.5, -0.5)
    assert w.grad.tolist() == pytest.approx([1.5, -1.5])


def test_paper_init_and_key_checks():
    zs, ft = {"w": torch.zeros(2)}, {"w": torch.tensor([2.0, 2.0])}
    assert mt.paper_init(zs, ft, 0.25)["w"].tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="differ"):
        mt.paper_init(zs, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        mt.paper_init(zs, {"w": torch.zeros(3)}, 0.5)
