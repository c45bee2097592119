"""Per-dataset accuracy, task-known and task-agnostic (union of all datasets' classes)."""

import numpy as np
import pytest
import torch
from PIL import Image

from condu_bench.config import ModelConfig, TrainConfig
from condu_bench.data.task import TaskData
from condu_bench.method import RunContext
from condu_bench.models.loading import load_model
from condu_bench.training.device import autocast_factory
from condu_bench.training.evaluate import Evaluator


class Coded:
    """Grey images whose brightness encodes a global class id (decoded by the oracle below)."""

    def __init__(self, global_ids, local_labels):
        self.global_ids, self.targets = list(global_ids), list(local_labels)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return Image.fromarray(np.full((32, 32, 3), 40 * self.global_ids[i], np.uint8)), self.targets[i]


class Oracle:
    """Reads the global id back from the pixels; answers in the label space the evaluator asks for."""

    name = "oracle"

    def __init__(self, wrong_offset=0):
        self.wrong_offset = wrong_offset

    def logits(self, images, task, ctx):
        ids = torch.round((images.mean(dim=(1, 2, 3)) - self.zero) / self.step).long()
        if task is not None:  # task known: local labels
            offset = sum(t.num_classes for t in ctx.label_space[: ctx.label_space.index(task)])
            ids = ids - offset
            width = task.num_classes
        else:
            width = sum(t.num_classes for t in ctx.label_space)
        return torch.nn.functional.one_hot((ids + self.wrong_offset).clamp(0, width - 1), width).float()


@pytest.fixture(scope="module")
def setup():
    loaded = load_model(ModelConfig(arch="condu-micro-vit", pretrained=None))
    ctx = RunContext(model=loaded.model, tokenizer=loaded.tokenizer, device=torch.device("cpu"),
                     pretrained_state={}, train_config=TrainConfig(), seed=0, eval_transform=loaded.eval_transform,
                     autocast=autocast_factory(torch.device("cpu"), "fp32"))
    a = TaskData("a", ["x", "y", "z"], ["a {}."], test=Coded([0, 1, 2, 2], [0, 1, 2, 2]))
    b = TaskData("b", ["u", "v"], ["a {}."], test=Coded([3, 4, 4], [0, 1, 1]))
    ctx.label_space = [a, b]
    return ctx, a, b


def test_task_known_and_task_agnostic_label_spaces(setup):
    ctx, a, b = setup
    evaluator = Evaluator(ctx, batch_size=2, progress=False)
    # brightness step between consecutive ids, after the model's normalisation
    probe = torch.stack([ctx.eval_transform(Image.fromarray(np.full((32, 32, 3), v, np.uint8))) for v in (0, 40)])
    Oracle.zero, Oracle.step = probe[0].mean().item(), (probe[1].mean() - probe[0].mean()).item()
    for task in (a, b):
        assert evaluator.accuracy(Oracle(), task, task_known=True) == 100.0
        assert evaluator.accuracy(Oracle(), task, task_known=False, label_space=[a, b]) == 100.0
    # An answer shifted by one class is scored as wrong, per dataset, not pooled over datasets.
    assert evaluator.accuracy(Oracle(wrong_offset=1), a, task_known=False, label_space=[a, b]) == 0.0
