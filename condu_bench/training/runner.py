"""Run one (method, seed) over a scenario: train each stream's tasks, evaluate after every step, resume.

Each stream starts from the pretrained weights with a fresh method instance. After every completed task the
accuracy rows, the model and the method's state are checkpointed, so a killed run continues from there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from condu_bench import run_store, task_states
from condu_bench.config import RunConfig
from condu_bench.datasets.decoded_cache import decoded_cache_dir
from condu_bench.method import RunContext, TaskInfo
from condu_bench.scenarios.avalanche_stream import build_avalanche_benchmark
from condu_bench.scenarios.base import Scenario, Stream
from condu_bench.training.device import derived_seed, resolve_num_workers, seed_everything
from condu_bench.training.evaluate import Evaluator
from condu_bench.training.loop import train_task


@dataclass
class StreamResult:
    name: str
    step_names: list[str]
    column_names: list[str]
    rows: list[list[float]] = field(default_factory=list)


def split_method_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A method's flat state: tensors go to safetensors, the rest must be JSON."""
    tensors = {f"method/{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    json.dumps(plain)  # fails loudly for a state that cannot be resumed
    return tensors, plain


def join_method_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state = dict(plain)
    state.update({k[len("method/"):]: v for k, v in tensors.items() if k.startswith("method/")})
    return state


class MethodRun:
    def __init__(self, method_cls: type, method_config: Any, config: RunConfig, scenario: Scenario, ctx: RunContext,
                 directory: Path, config_hash: str, observer: Any = None):
        self.method_cls, self.method_config = method_cls, method_config
        self.config, self.scenario, self.ctx = config, scenario, ctx
        self.directory, self.config_hash = directory, config_hash
        self.num_workers = resolve_num_workers(config.num_workers, ctx.synthetic)
        self.evaluator = Evaluator(ctx, config.eval.batch_size, self.num_workers, config.eval.max_per_dataset, config.progress,
                                   decoded_cache_dir=decoded_cache_dir(config.eval), feature_cache=config.eval.feature_cache)
        self.base_model = ctx.model  # a method may swap in its own model in setup; each stream starts from this one
        self.report: dict[str, Any] = {}
        # A scenario with several streams (base-to-novel: one per dataset) sets its method up again for each; each
        # stream's own report is kept by stream name (and in the checkpoint), so the record holds them all.
        self.stream_reports: dict[str, dict[str, Any]] = {}
        # per trained task, what validation-based selection chose (train.select=best_val): a run must say which
        # epoch its reported model is, or a selection that keeps an early epoch looks like a method that trained
        self.model_selection: dict[str, dict[str, Any]] = {}
        self.eval_seconds_per_image: float | None = None  # of the first evaluation row (see evaluate_row)
        self.trainable_parameters = 0  # what the last trained task trained (the same whether or not the run resumed)
        # Where this process's time went, over the tasks it ran (a resumed run counts only those after the resume).
        self.seconds: dict[str, float] = {"train_seconds": 0.0, "data_wait_seconds": 0.0, "eval_seconds": 0.0, "tasks": 0}
        self.observer = observer  # optional live logging (condu_bench.run_observer), called per step and per row

    def reset_model(self) -> None:
        self.ctx.model = self.base_model
        self.ctx.model.load_state_dict(self.ctx.pretrained_state)
        self.ctx.model.requires_grad_(False).eval()

    def task_info(self, index: int, stream: Stream) -> TaskInfo:
        from condu_bench.recipes import task_iterations

        task = stream.train[index]
        cfg = self.ctx.train_config  # this method's resolved recipe
        return TaskInfo(
            index=index,
            data=task,
            iterations=task_iterations(cfg, task.name, len(task.train), task.info.get("dataset")),
            lr=cfg.lr_per_task.get(task.name, cfg.lr),
        )

    def evaluate_row(self, method: Any, stream: Stream) -> list[float]:
        from tqdm.auto import tqdm

        known = not self.scenario.task_agnostic
        tasks = tqdm(stream.evaluate, desc=f"{method.name} | evaluating", disable=not self.config.progress, leave=False)
        for task in stream.evaluate:
            self.evaluator.eval_set(task)  # decoding (or finding the decoded cache) is not inference
        start = time.perf_counter()
        row = []
        for task in tasks:
            self.ctx.label_space = self.scenario.evaluation_space(stream, task)
            row.append(self.evaluator.accuracy(method, task, known, self.ctx.label_space))
        if self.eval_seconds_per_image is None:
            # The reports' inference cost: this process's first row, from decoded images and before any image
            # features are cached (later rows of frozen-image-tower methods reuse them and would look cheaper).
            cap = self.config.eval.max_per_dataset
            images = sum(len(t.test) if cap is None else min(cap, len(t.test)) for t in stream.evaluate)
            self.eval_seconds_per_image = (time.perf_counter() - start) / max(1, images)
        return row

    def run(self, resume: bool) -> tuple[list[StreamResult], float]:
        progress = run_store.read_progress(self.directory) if resume else None
        results: list[StreamResult] = [StreamResult(**r) for r in progress["results"]] if progress else []
        self.stream_reports = dict(progress.get("stream_reports", {})) if progress else {}
        self.model_selection = dict(progress.get("model_selection", {})) if progress else {}
        elapsed = progress["elapsed_s"] if progress else 0.0
        start = time.perf_counter() - elapsed
        for s_index, stream in enumerate(self.scenario.streams):
            done_in_stream = 0
            if s_index < len(results):
                done_in_stream = len(results[s_index].rows)
                if done_in_stream == len(stream.train):
                    continue
            else:
                results.append(StreamResult(stream.name, [t.name for t in stream.train], [t.name for t in stream.evaluate]))
            self.run_stream(s_index, stream, results, done_in_stream, progress if done_in_stream else None, start)
        return results, time.perf_counter() - start

    def run_stream(self, s_index: int, stream: Stream, results: list[StreamResult], done: int,
                   progress: dict[str, Any] | None, start: float) -> None:
        ctx = self.ctx
        self.reset_model()
        seed_everything(derived_seed(ctx.seed, s_index, "setup"))  # fixes any initialisation a method makes
        method = self.method_cls(self.method_config)
        ctx.tasks_seen = []
        method.setup(ctx)
        result = results[s_index]
        if progress is not None:
            tensors = run_store.load_progress_tensors(self.directory, progress)
            ctx.model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
            method.load_state_dict(join_method_state(tensors, progress["method_state"]))
            ctx.tasks_seen = list(stream.train[:done])
        if not method.trains:
            row = self.evaluate_row(method, stream)
            result.rows = [row for _ in stream.train]
            self.finish_report(stream, method)
            return
        train_tf = ctx.augmentation(ctx.train_config.augment)
        benchmark = build_avalanche_benchmark(stream, train_tf, ctx.eval_transform)
        if self.observer is not None:
            self.observer.start_stream(s_index, stream.name, [self.task_info(i, stream).iterations for i in range(len(stream.train))])
        for index, experience in enumerate(benchmark.train_stream):
            if index < done:
                continue
            info = self.task_info(index, stream)
            stats = train_task(method, info, experience.dataset.train(), ctx, stream_index=s_index,
                               num_workers=self.num_workers, progress=self.config.progress, observer=self.observer,
                               fixed_items=ctx.train_config.augment == "none")
            self.trainable_parameters = stats.get("trainable_parameters", 0)
            if "selection" in stats:
                self.model_selection[info.name] = stats["selection"]
            for key in ("train_seconds", "data_wait_seconds"):
                self.seconds[key] += stats.get(key, 0.0)
            ctx.tasks_seen.append(info.data)
            evaluation_started = time.perf_counter()
            result.rows.append(self.evaluate_row(method, stream))
            self.seconds["eval_seconds"] += time.perf_counter() - evaluation_started
            self.seconds["tasks"] += 1
            if task_states.keeps_task_states(method.name):  # before the checkpoint that marks the task done
                task_states.save_task_state(self.directory, stream.name, info.name, method, ctx.model)
            if self.observer is not None:
                self.observer.on_row(index, result.rows, result.step_names, result.column_names)
            self.stream_reports[stream.name] = method.report()
            self.checkpoint(method, results, start)
        self.finish_report(stream, method)

    def finish_report(self, stream: Stream, method: Any) -> None:
        """The run's ``method_report``: the last stream's method report and the run's costs, plus every stream's own
        report under ``streams`` when the scenario has several."""
        report = self.stream_reports[stream.name] = method.report()
        several = len(self.scenario.streams) > 1
        self.report = {**report, **self.cost_report(self.ctx), **({"streams": dict(self.stream_reports)} if several else {})}

    def cost_report(self, ctx: RunContext) -> dict[str, Any]:
        """What the cost block of the reports reads: trainable parameters, and peak GPU memory on CUDA."""
        out: dict[str, Any] = {"trainable_parameters": self.trainable_parameters,
                               "eval_seconds_per_image": self.eval_seconds_per_image,
                               "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}
        if self.model_selection:
            out["model_selection"] = dict(self.model_selection)
        if ctx.device.type == "cuda":
            out["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**20, 1)
        return out

    def checkpoint(self, method: Any, results: list[StreamResult], start: float) -> None:
        tensors, plain = split_method_state(method.state_dict())
        tensors.update({f"model/{k}": v for k, v in self.ctx.model.state_dict().items()})
        progress = {
            "config_hash": self.config_hash,
            "results": [r.__dict__ for r in results],
            "method_state": plain,
            "stream_reports": self.stream_reports,
            "model_selection": self.model_selection,
            "elapsed_s": time.perf_counter() - start,
        }
        run_store.save_progress(self.directory, progress, tensors)
