"""How much a later run gains from the on-disk image-feature cache: zero-shot evaluation of one decoded split by three
evaluators in turn (as three runs would), ViT-B/16 with random weights on the CPU, 96 of `condu-bench bench`'s
500x375 JPEGs (run `condu-bench bench --quick` once to generate them).

    python docs/experiments/feature_cache_across_runs.py     # about 30 s on 2 CPU cores

Session 7: the first run 21.0 s (it runs the image tower), the next two 0.43 s each (they read the features; what is
left is the text classifier and hashing the tower's weights): 49x.
"""
import sys, tempfile, time
from pathlib import Path
import torch
from condu_bench.config import ModelConfig, TrainConfig
from condu_bench.data.task import TaskData
from condu_bench.datasets.images import ImageListDataset
from condu_bench.method import RunContext
from condu_bench.models.loading import load_model
from condu_bench.registries import METHODS
from condu_bench.training.device import autocast_factory
from condu_bench.training.evaluate import Evaluator

from condu_bench.synthetic.pretrain import default_cache_dir

root = default_cache_dir() / "bench-photos-500x375-v2"
if not root.is_dir():
    sys.exit(f"{root} does not exist: run `condu-bench bench --quick` once to generate the photos")
items = sorted((str(p.relative_to(root)), int(p.parent.name.split("_")[1])) for p in root.glob("class_*/*.jpg"))[:96]
loaded = load_model(ModelConfig(arch="ViT-B-16", pretrained=None))
ctx = RunContext(model=loaded.model.eval(), tokenizer=loaded.tokenizer, device=torch.device("cpu"), pretrained_state={},
                 train_config=TrainConfig(), seed=0, eval_transform=loaded.eval_transform,
                 autocast=autocast_factory(torch.device("cpu"), "fp32"))
classes = sorted({l for _, l in items})
task = TaskData("photos", [f"class {c}" for c in classes], ["a photo of a {}."], test=ImageListDataset(root, items))
cache = Path(tempfile.mkdtemp())
zs = METHODS.get("zeroshot")
Evaluator(ctx, 32, progress=False, decoded_cache_dir=cache, feature_cache=False).accuracy(zs(), task)  # decode once
times = []
for run in range(3):
    ev = Evaluator(ctx, 32, progress=False, decoded_cache_dir=cache)
    t = time.perf_counter(); acc = ev.accuracy(zs(), task); times.append(time.perf_counter() - t)
    print(f"run {run}: {times[-1]:.2f} s, accuracy {acc:.2f}, computed {ev.features.computed}, loaded {ev.features.loaded}")
print(f"{len(items)} images; later runs {times[0] / min(times[1:]):.1f}x faster")
