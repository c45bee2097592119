"""``condu-bench bench``: speed and memory of the shared loop, as ratios measured side by side in one run.

Compared on the current device, with random weights of any open_clip architecture (no download needed,
e.g. ``model.arch=ViT-B-16``):
- training step: fp32 vs bf16 autocast (CUDA only), images/s and peak memory;
- evaluation: transformed-tensor cache (what the runner does for small sets) vs decoding every image again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Timing:
    name: str
    seconds_per_batch: float
    images_per_s: float
    peak_mib: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def time_train_steps(ctx: Any, method: Any, task: Any, images: torch.Tensor, labels: torch.Tensor, steps: int, autocast,
                     fused: bool = True) -> Timing:
    from condu_bench.method import Batch
    from condu_bench.training.loop import build_optimizer, select_trainable

    params = select_trainable(ctx.model, method)
    optimizer = build_optimizer(params, ctx.train_config, 1e-5) if fused else torch.optim.AdamW(params, lr=1e-5)
    batch = Batch(images.to(ctx.device), labels.to(ctx.device))
    ctx.model.train()
    for step in range(steps + 2):  # two warm-up steps are not timed
        if step == 2:
            _sync(ctx.device)
            _peak_reset(ctx.device)
            start = time.perf_counter()
        with autocast():
            loss = method.training_loss(batch, task, ctx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(ctx.device)
    per_batch = (time.perf_counter() - start) / steps
    return Timing("", per_batch, len(images) / per_batch, _peak(ctx.device))


def run_bench(config: Any, steps: int = 5, eval_images: int = 512) -> list[tuple[str, Timing]]:
    from condu_bench.baselines.finetune import ContinualFinetune
    from condu_bench.data.task import TaskData
    from condu_bench.method import RunContext, TaskInfo
    from condu_bench.models.loading import load_model
    from condu_bench.training.device import autocast_factory, pick_device
    from condu_bench.training.evaluate import Evaluator

    device = pick_device(config.device)
    loaded = load_model(config.model, progress=config.progress)
    model = loaded.model.to(device)
    size = loaded.eval_transform.transforms[0].size
    size = size if isinstance(size, int) else size[0]
    classnames = [f"class {i}" for i in range(10)]
    dataset = RandomImages(eval_images, size, len(classnames))
    task = TaskData("bench", classnames, ["a photo of a {}."], test=dataset, train=dataset)
    ctx = RunContext(model=model, tokenizer=loaded.tokenizer, device=device,
                     pretrained_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                     train_config=config.train, seed=0, train_transform=loaded.train_transform,
                     eval_transform=loaded.eval_transform, autocast=autocast_factory(device, "fp32"))
    info = TaskInfo(0, task, steps, 1e-5)
    batch = config.train.batch_size
    images = torch.stack([loaded.eval_transform(dataset[i][0]) for i in range(batch)])
    labels = torch.tensor([dataset[i][1] for i in range(batch)])
    results = []
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    for precision in precisions:
        timing = time_train_steps(ctx, ContinualFinetune(), info, images, labels, steps, autocast_factory(device, precision))
        results.append((f"train step, {precision} (batch {batch})", timing))
        ctx.model.load_state_dict(ctx.pretrained_state)
    unfused = time_train_steps(ctx, ContinualFinetune(), info, images, labels, steps, autocast_factory(device, "fp32"), fused=False)
    results.append((f"train step, fp32, per-tensor AdamW (batch {batch})", unfused))
    ctx.model.load_state_dict(ctx.pretrained_state)
    for cached in (True, False):
        evaluator = Evaluator(ctx, config.eval.batch_size, config.num_workers, progress=False)
        if not cached:
            evaluator.cache_limit_bytes = 0
        evaluator.eval_set(task)  # the cache is filled once per run, outside the repeated evaluations
        _sync(device)
        start = time.perf_counter()
        for _ in range(3):
            evaluator.accuracy(ZeroShotProbe(), task)
        _sync(device)
        seconds = (time.perf_counter() - start) / 3
        n_batches = -(-len(dataset) // config.eval.batch_size)
        results.append((f"evaluation, {'cached tensors' if cached else 'decode every time'}",
                        Timing("", seconds / n_batches, len(dataset) / seconds, _peak(device))))
    return results


class ZeroShotProbe:
    def logits(self, images, task, ctx):
        return None


class RandomImages:
    """Random RGB images of the model's input size, decoded through PIL like a real dataset."""

    def __init__(self, n: int, size: int, num_classes: int):
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)
        self.targets = [i % num_classes for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        return Image.fromarray(self.pixels[index].numpy()), self.targets[index]


def format_bench(results: list[tuple[str, Timing]], device: str, arch: str) -> str:
    lines = [f"device: {device}, model: {arch}", "", "| measurement | s / batch | images / s | peak MiB |", "|:--|--:|--:|--:|"]
    for name, t in results:
        peak = f"{t.peak_mib:.0f}" if t.peak_mib is not None else "-"
        lines.append(f"| {name} | {t.seconds_per_batch:.4f} | {t.images_per_s:.1f} | {peak} |")
    by_name = dict(results)
    lines.append("")
    fp32 = next((t for n, t in results if n.startswith("train step, fp32")), None)
    bf16 = next((t for n, t in results if n.startswith("train step, bf16")), None)
    if fp32 and bf16:
        lines.append(f"bf16 / fp32 training throughput: {bf16.images_per_s / fp32.images_per_s:.2f}x")
    unfused = next((t for n, t in results if "per-tensor AdamW" in n), None)
    if fp32 and unfused:
        lines.append(f"fused / per-tensor AdamW training throughput: {fp32.images_per_s / unfused.images_per_s:.2f}x")
    cached = by_name.get("evaluation, cached tensors")
    decoded = by_name.get("evaluation, decode every time")
    if cached and decoded:
        lines.append(f"cached / decoded evaluation throughput: {cached.images_per_s / decoded.images_per_s:.2f}x")
    return "\n".join(lines)
