"""The five speed targets of the harness, each a ratio of two timings taken alternately in one process.

- ``overhead_ratio``: the harness's full fine-tuning step (:func:`condu_bench.training.loop.train_task` with
  Continual-FT) over a plain PyTorch loop doing the identical work (same model, data, loss, optimizer, schedule,
  precision); target at most 1.05.
- ``eval_cache_speedup``: evaluating JPEG files decoded every time over evaluating them from the decoded-image cache,
  at the model's input size; target at least 3.
- ``feature_cache_speedup``: repeated zero-shot evaluation recomputing image features over reusing them; target at
  least 5.
- ``condu_agnostic_cost``: ConDU's task-agnostic inference with K experts over one model's inference on the same
  images and label space; target at most K + 1.
- ``fixed_items_speedup``: drawing three epochs of training batches under the eval transform (``train.augment:
  none``, the distillation methods' image streams) read per item and step by the loader, over read once and kept
  (:mod:`condu_bench.training.batches`); target at least 2.

Each pair is timed ``repeats`` times, alternating (A B B A ...) so that drift of the machine hits both sides, and the
fastest timings are compared. The first call of each side is a warm-up and is not timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from condu_bench.data.task import TaskData
from condu_bench.method import RunContext, TaskInfo


@dataclass
class Ratio:
    key: str
    value: float
    target: float
    at_most: bool  # True: the value must not exceed the target; False: it must reach it
    baseline: str  # what the denominator timed
    candidate: str  # what the numerator timed
    numerator_s: float
    denominator_s: float

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.at_most else self.value >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_fastest(first: Callable[[], float], second: Callable[[], float], repeats: int) -> tuple[float, float]:
    """The fastest of ``repeats`` timings of each of two callables run alternately, in the order A B B A A B ...
    (neither side always runs first); each returns the seconds it measured. The fastest is the run least disturbed
    by other work on the machine, which on a shared machine the median is not."""
    first(), second()  # warm-up: allocations, kernels, caches of the harness itself
    a, b = [], []
    for repeat in range(repeats):
        if repeat % 2:
            b.append(second())
            a.append(first())
        else:
            a.append(first())
            b.append(second())
    return min(a), min(b)


def timed(ctx: RunContext, work: Callable[[], Any]) -> float:
    _sync(ctx.device)
    start = time.perf_counter()
    work()
    _sync(ctx.device)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------------- overhead
class TensorPairs(torch.utils.data.Dataset):
    """Ready model inputs and labels (the loaders of both loops then do the same, negligible work)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.targets = images, labels.tolist()
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def plain_finetune_loop(ctx: RunContext, dataset: TensorPairs, task: TaskData, steps: int, lr: float, seed: int) -> None:
    """Continual-FT's work written as a plain PyTorch loop: every weight but logit_scale trains, cross-entropy with
    label smoothing of s * cos(image, class) over the first template's class embeddings, fused AdamW, linear warm-up
    then cosine per step."""
    from condu_bench.models.classifier import LOGIT_SCALE
    from condu_bench.recipes import warmup_steps
    from condu_bench.training.schedule import warmup_cosine

    cfg, model = ctx.train_config, ctx.model
    params = [p for name, p in model.named_parameters() if name != "logit_scale"]
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)
    scheduler = warmup_cosine(optimizer, warmup_steps(cfg, len(dataset)), steps, cfg.schedule)
    tokens = ctx.tokenizer([task.templates[0].format(c) for c in task.classnames]).to(ctx.device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, drop_last=True,
                                         sampler=torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)))
    scale = model.logit_scale.detach().exp().clamp(max=LOGIT_SCALE)
    batches = iter(loader)
    model.train()
    for _ in range(steps):
        try:
            images, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, labels = next(batches)
        images, labels = images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True)
        with ctx.autocast():
            image_feats = F.normalize(model.encode_image(images).float(), dim=-1)
            text_feats = F.normalize(model.encode_text(tokens).float(), dim=-1)
            text_feats = F.normalize(text_feats.view(len(task.classnames), 1, -1).mean(dim=1), dim=-1)  # 1 template
            loss = F.cross_entropy(scale * image_feats @ text_feats.t(), labels, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()


def harness_data_seed(ctx: RunContext) -> int:
    """The data-order seed train_task uses for the first task of the first stream (the plain loop draws the same)."""
    from condu_bench.training.device import derived_seed

    return derived_seed(ctx.seed, 0, 0)


def overhead_ratio(ctx: RunContext, steps: int, repeats: int, num_classes: int = 10) -> Ratio:
    from condu_bench.baselines.finetune import ContinualFinetune
    from condu_bench.training.loop import train_task

    size = input_size(ctx)
    n = ctx.train_config.batch_size * steps
    generator = torch.Generator().manual_seed(0)
    data = TensorPairs(torch.randn(n, 3, size, size, generator=generator), torch.arange(n) % num_classes)
    task = TaskData("bench", [f"class {i}" for i in range(num_classes)], ["a photo of a {}."], test=data, train=data)
    lr = 1e-5

    def harness() -> float:
        ctx.model.load_state_dict(ctx.pretrained_state)
        return timed(ctx, lambda: train_task(ContinualFinetune(), TaskInfo(0, task, steps, lr), data, ctx,
                                             stream_index=0, progress=False))

    def plain() -> float:
        ctx.model.load_state_dict(ctx.pretrained_state)
        return timed(ctx, lambda: plain_finetune_loop(ctx, data, task, steps, lr, seed=harness_data_seed(ctx)))

    harness_s, plain_s = paired_fastest(harness, plain, repeats)
    ctx.model.load_state_dict(ctx.pretrained_state)
    return Ratio("overhead_ratio", harness_s / plain_s, 1.05, True, f"plain PyTorch loop, {steps} steps",
                 f"harness train_task (finetune), {steps} steps", harness_s, plain_s)


# --------------------------------------------------------------------------------------------------- evaluation
def input_size(ctx: RunContext) -> int:
    size = ctx.eval_transform.transforms[0].size
    return size if isinstance(size, int) else size[0]


def photo_task(root: Path, n: int, name: str = "photos", classes: int = 10, offset: int = 0) -> TaskData:
    from condu_bench.datasets.images import ImageListDataset
    from condu_bench.perf.photos import write_photos

    items = write_photos(root, n + offset, classes=classes)[offset:]
    return TaskData(name, [f"{name} class {i}" for i in range(classes)], ["a photo of a {}."],
                    test=ImageListDataset(root, items), train=ImageListDataset(root, items))


def eval_cache_speedup(ctx: RunContext, task: TaskData, cache_dir: Path, batch_size: int, num_workers: int,
                       repeats: int) -> Ratio:
    from condu_bench.baselines.finetune import ContinualFinetune
    from condu_bench.training.evaluate import Evaluator

    decoding = Evaluator(ctx, batch_size, num_workers, progress=False, feature_cache=False)
    decoding.cache_limit_bytes = 0  # no in-memory tensors either: every evaluation decodes the files
    cached = Evaluator(ctx, batch_size, num_workers, progress=False, decoded_cache_dir=cache_dir, feature_cache=False)
    method = ContinualFinetune()  # standard inference through the image tower
    decode_s, cached_s = paired_fastest(lambda: timed(ctx, lambda: decoding.accuracy(method, task)),
                                        lambda: timed(ctx, lambda: cached.accuracy(method, task)), repeats)
    return Ratio("eval_cache_speedup", decode_s / cached_s, 3.0, False, "evaluation from the decoded-image cache",
                 f"evaluation decoding {len(task.test)} JPEGs each time", decode_s, cached_s)


def feature_cache_speedup(ctx: RunContext, task: TaskData, cache_dir: Path, batch_size: int, repeats: int) -> Ratio:
    from condu_bench.registries import METHODS
    from condu_bench.training.evaluate import Evaluator

    zeroshot = METHODS.get("zeroshot")()
    recompute = Evaluator(ctx, batch_size, progress=False, decoded_cache_dir=cache_dir, feature_cache=False)
    reuse = Evaluator(ctx, batch_size, progress=False, decoded_cache_dir=cache_dir, feature_cache=True)
    recompute_s, reuse_s = paired_fastest(lambda: timed(ctx, lambda: recompute.accuracy(zeroshot, task)),
                                          lambda: timed(ctx, lambda: reuse.accuracy(zeroshot, task)), repeats)
    return Ratio("feature_cache_speedup", recompute_s / reuse_s, 5.0, False, "zero-shot evaluation, cached features",
                 "zero-shot evaluation, features recomputed", recompute_s, reuse_s)


# --------------------------------------------------------------------------------------------------- ConDU
def condu_with_experts(ctx: RunContext, tasks: list[TaskData], noise: float = 1e-2):
    """A ConDU method that has learned ``tasks``: each expert is theta_0 plus a random delta (speed does not depend
    on what an expert learned), merged exactly as after training."""
    from condu_bench.baselines.condu import ConDU

    ctx.model.load_state_dict(ctx.pretrained_state)
    method = ConDU(ConDU.Config(top_k=len(tasks)))
    method.setup(ctx)
    generator = torch.Generator().manual_seed(0)
    for index, task in enumerate(tasks):
        method.before_task(TaskInfo(index, task, 0, 0.0), ctx)
        with torch.no_grad():
            for name, param in ctx.model.named_parameters():
                if name in method.keys:
                    param.add_(noise * torch.randn(param.shape, generator=generator).to(param.device, param.dtype))
        method.after_task(TaskInfo(index, task, 0, 0.0), ctx)
    ctx.model.load_state_dict(ctx.pretrained_state)
    return method


def condu_agnostic_cost(ctx: RunContext, tasks: list[TaskData], cache_dir: Path, batch_size: int, repeats: int) -> Ratio:
    from condu_bench.baselines.finetune import ContinualFinetune
    from condu_bench.training.evaluate import Evaluator

    k = len(tasks)
    condu = condu_with_experts(ctx, tasks)
    ctx.label_space = list(tasks)
    evaluator = Evaluator(ctx, batch_size, progress=False, decoded_cache_dir=cache_dir, feature_cache=False)
    single = ContinualFinetune()

    def agnostic(method) -> float:
        return timed(ctx, lambda: evaluator.accuracy(method, tasks[0], task_known=False, label_space=tasks))

    condu_s, single_s = paired_fastest(lambda: agnostic(condu), lambda: agnostic(single), repeats)
    return Ratio("condu_agnostic_cost", condu_s / single_s, float(k + 1), True,
                 "one model, task-agnostic", f"ConDU task-agnostic, K = {k} experts", condu_s, single_s)


# --------------------------------------------------------------------------------------------------- batches
def fixed_items_speedup(ctx: RunContext, batch_size: int, repeats: int, epochs: int = 3) -> Ratio:
    """Three epochs of batches from a synthetic domain of 10 batches' worth of images at the model's input size,
    through the eval transform, as the synthetic benchmarks train: per item and step, or each item read once."""
    from condu_bench.synthetic.domains import domain_classnames, make_domain_split
    from condu_bench.training.batches import endless_batches
    from condu_bench.training.evaluate import Transformed

    per_class = -(-10 * batch_size // len(domain_classnames("shapes")))
    images = Transformed(make_domain_split("shapes", "train", n_per_class=per_class, image_size=input_size(ctx)),
                         ctx.eval_transform)
    steps = epochs * (len(images) // batch_size)

    def draw(fixed_items: bool) -> float:
        start = time.perf_counter()
        batches = endless_batches(images, batch_size, seed=0, num_workers=0, pin=False, fixed_items=fixed_items)
        for _ in range(steps):
            next(batches)
        return time.perf_counter() - start

    per_step_s, kept_s = paired_fastest(lambda: draw(False), lambda: draw(True), repeats)
    return Ratio("fixed_items_speedup", per_step_s / kept_s, 2.0, False, f"each item read once ({len(images)} images)",
                 f"{steps} batches of {batch_size} read per item and step", per_step_s, kept_s)
