"""iCaRL (ZSCL's mtil/src/models/icarl.py with distillation on): herding, the memory budget, the loss, resuming."""

import pytest
import torch
import torch.nn.functional as F
from helpers import micro_overrides, run_probed

from condu_bench.exemplars import herding_order
from condu_bench.registries import METHODS

KEY = "visual.conv1.weight"
TWO = "scenario.options.order=shapes,colours"


def run(tmp_path, method, *extra, base=None, interrupt_before=None):
    """Run ``method`` (or ``base`` registered under its name) on the micro scenario: the model's weights and (for
    iCaRL) a copy of the memory after every task, and the run's record; optionally interrupted and resumed."""
    states, memories = [], []

    def keep(instance, task, ctx):
        states.append({k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()})
        memories.append([(name, indices.clone()) for name, indices in getattr(instance, "memory", [])])

    record = run_probed(tmp_path, method, micro_overrides(method) + list(extra), base, interrupt_before, keep)
    return states, memories, record


def floats(state):
    return {k: v for k, v in state.items() if v.is_floating_point()}


# ------------------------------------------------------------------ herding


def brute_force_herding(features, count):
    """The greedy rule written out directly: each step tries every remaining row."""
    mu = features.double().mean(0)
    chosen, total = [], torch.zeros_like(mu)
    for k in range(count):
        best, best_distance = None, None
        for i in range(len(features)):
            if i in chosen:
                continue
            distance = ((mu - (total + features[i].double()) / (k + 1)) ** 2).sum()
            if best_distance is None or distance < best_distance:
                best, best_distance = i, distance
        chosen.append(best)
        total = total + features[best].double()
    return chosen


def test_herding_on_a_hand_made_square():
    # four corners and a point just above the centre: mean (0, 0.02)
    points = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [0.0, 0.1]])
    # 1st: the point nearest the mean (the centre point); 2nd: the mean of the picks should be the mean, so the
    # best partner of (0, 0.1) lies at (0, -0.06): the two lower corners tie, the lower index wins; 3rd: the
    # running sum (-1, -0.9) is balanced by (1, 1); 4th: (0, 0.1) + (1, -1) is nearer 4 * mean than with (-1, 1).
    assert herding_order(points, 5) == [4, 2, 0, 3, 1]
    assert herding_order(points, 2) == [4, 2]
    assert herding_order(points, 9) == [4, 2, 0, 3, 1]  # clipped to N
    assert herding_order(points, 0) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_herding_matches_the_greedy_rule(seed):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(40, 6, generator=g), dim=-1)
    expected = brute_force_herding(features, 40)
    assert herding_order(features, 40) == expected
    assert herding_order(features, 7) == expected[:7]  # a prefix: cutting a herded list keeps the best ones
    assert sorted(expected) == list(range(40))


# ------------------------------------------------------------------ memory


def test_memory_budget_and_herding_with_the_trained_model(tmp_path):
    herded = []

    base = METHODS.get("icarl")

    class Spy(base):
        def after_task(self, task, ctx):
            # what herding must pick: the model just trained, eval transform, normalised features, first candidates
            from condu_bench.training.evaluate import Transformed

            data = Transformed(task.data.train, ctx.eval_transform, 20)
            images = torch.stack([data[i][0] for i in range(len(data))])
            with torch.no_grad():
                feats = F.normalize(ctx.model.eval().encode_image(images).float(), dim=-1)
            herded.append(herding_order(feats, 12 // (len(self.memory) + 1)))
            super().after_task(task, ctx)

    _, memories, record = run(tmp_path, "icarl", "method_options.icarl.memory_size=12",
                              "method_options.icarl.max_candidates=20", base=Spy)
    sizes = [[len(ix) for _, ix in memory] for memory in memories]
    assert sizes == [[12], [6, 6], [4, 4, 4]]
    assert all(sum(s) <= 12 for s in sizes)
    assert [name for name, _ in memories[-1]] == ["shapes", "colours", "counts"]
    for t, memory in enumerate(memories):
        assert memory[-1][1].tolist() == herded[t]  # the new dataset: herding order
        assert max(memory[-1][1].tolist()) < 20  # only the first max_candidates samples are candidates
        for (_, now), (_, before) in zip(memory[:-1], memories[t - 1]):  # earlier datasets: cut to a prefix
            assert torch.equal(now, before[: len(now)])
        assert all(ix.dtype == torch.int64 for _, ix in memory)
    assert record["method_report"]["exemplars"] == {"shapes": 4, "colours": 4, "counts": 4}


def test_reference_first_task_keeps_the_first_samples(tmp_path):
    _, memories, _ = run(tmp_path, "icarl", TWO, "method_options.icarl.memory_size=10",
                         "method_options.icarl.herd_first_task=false")
    assert memories[0][0][1].tolist() == list(range(10))
    assert memories[1][0][1].tolist() == list(range(5))


# ------------------------------------------------------------------ loss


@pytest.fixture(scope="module")
def finetune_two_tasks(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ft"), "finetune", TWO)[0]


def test_first_task_is_plain_finetuning_then_distillation_acts(tmp_path, finetune_two_tasks):
    ft = finetune_two_tasks
    icarl = run(tmp_path / "on", "icarl", TWO, "method_options.icarl.memory_size=12")[0]
    for k in floats(ft[0]):
        assert torch.equal(icarl[0][k], ft[0][k]), k
    assert not torch.equal(icarl[1][KEY], ft[1][KEY])  # task 2 distils on the memory
    # and nothing but the distillation differs: without it (herding included) task 2 is fine-tuning too
    off = run(tmp_path / "off", "icarl", TWO, "method_options.icarl.memory_size=12",
              "method_options.icarl.image_weight=0", "method_options.icarl.text_weight=0")[0]
    for k in floats(ft[1]):
        assert torch.equal(off[1][k], ft[1][k]), k


def test_distillation_teacher_texts_and_memory_images(tmp_path):
    """The teacher is theta_0, the texts the current classes in the first template, the images the exemplars."""
    base = METHODS.get("icarl")
    seen = []

    class Spy(base):
        def before_task(self, task, ctx):
            super().before_task(task, ctx)
            if self.distiller is None:
                seen.append(None)
                return
            teacher = self.distiller.teacher.state_dict()
            tokens = ctx.tokenizer([task.data.templates[0].format(c) for c in task.data.classnames]).to(ctx.device)
            with torch.no_grad():
                expected = F.normalize(self.distiller.teacher.encode_text(tokens).float(), dim=-1)
            memory_images = torch.stack([ctx.eval_transform(task_data.train[i][0])
                                         for task_data, (_, ix) in zip(ctx.tasks_seen, self.memory) for i in ix.tolist()])
            stream, batches = self.distiller.images, []

            class Recorder:
                def next(self, device):
                    images = stream.next(device)
                    batches.append(images)
                    return images

            self.distiller.images = Recorder()
            seen.append((all(torch.equal(teacher[k], ctx.pretrained_state[k]) for k in teacher),
                         torch.allclose(self.distiller.text_features, expected, atol=1e-6), memory_images, batches))

    run(tmp_path, "icarl", "method_options.icarl.memory_size=12", "method_options.icarl.ref_batch_size=4", base=Spy)
    assert seen[0] is None  # empty memory on the first task
    for is_theta0, texts_ok, memory_images, batches in seen[1:]:
        assert is_theta0 and texts_ok
        assert len(batches) == 3 and all(len(b) == 4 for b in batches)
        flat = memory_images.flatten(1)
        for b in batches:  # every distillation image is an exemplar (eval transform)
            assert all((flat == row).all(1).any() for row in b.flatten(1))
    assert len(seen[1][2]) == 12 and len(seen[2][2]) == 12  # 12 of shapes, then 6 + 6


# ------------------------------------------------------------------ state


def test_state_round_trip_and_resume_rebuild_the_memory(tmp_path):
    from condu_bench.baselines.icarl import ICaRL

    method = ICaRL(ICaRL.Config(memory_size=12))
    method.memory = [("shapes", torch.tensor([5, 1, 3])), ("colours", torch.tensor([], dtype=torch.int64))]
    state = method.state_dict()
    assert state["datasets"] == ["shapes", "colours"]
    restored = ICaRL(ICaRL.Config(memory_size=12))
    restored.load_state_dict(state)
    assert [(n, ix.tolist()) for n, ix in restored.memory] == [("shapes", [5, 1, 3]), ("colours", [])]

    extra = ("method_options.icarl.memory_size=12", "method_options.icarl.ref_batch_size=4")
    whole_states, whole_memories, whole_record = run(tmp_path / "whole", "icarl", *extra)
    states, memories, record = run(tmp_path / "resumed", "icarl", *extra, interrupt_before=2)
    assert [(n, ix.tolist()) for n, ix in memories[-1]] == [(n, ix.tolist()) for n, ix in whole_memories[-1]]
    for k in whole_states[-1]:
        assert torch.equal(states[-1][k], whole_states[-1][k]), k
    assert record["per_dataset"] == whole_record["per_dataset"]
