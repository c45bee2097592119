"""How much of each expert survives ConDU's unify-decouple merge on the embedded world.

Trains one expert per synthetic domain from theta_0 (close to the harness's default recipe: AdamW lr 2e-4, 150
steps of 32 images, 10 warm-up steps then cosine, label smoothing 0.2, every template), merges them in the world's
order with :mod:`condu_bench.merging` as ConDU does, and after each merge prints every stored task's test accuracy
with its decoupled delta, the cosine between decoupled and original delta, and its rescaler.

    python docs/experiments/condu_merge_check.py        # about 2 minutes on 2 CPU cores, on the cached tiny CLIP

Session 6 (world version 6, tiny CLIP pretrained with seed 0): the counts expert scores 98.0 % before the merge and
44.0 % decoupled (cosine 0.61, rescaler 0.68), digits 81.4 % and 65.0 %; shapes, colours and textures keep most of
theirs (cosines 0.75-0.81). The harness's ConDU shows the same 44 % on counts.
"""

import math

import torch
import torch.nn.functional as F

from condu_bench.merging import add_task, apply_delta, decouple, task_delta
from condu_bench.synthetic.domains import DOMAIN_NAMES, domain_classnames, domain_templates, make_domain_split
from condu_bench.synthetic.pretrain import images_to_tensor, load_tiny_clip

STEPS, WARMUP, LR, BATCH = 150, 10, 2e-4, 32


def class_weights(model, tokenizer, domain):
    names, templates = domain_classnames(domain), domain_templates(domain)
    tokens = tokenizer([t.format(c) for c in names for t in templates])
    features = F.normalize(model.encode_text(tokens), dim=-1).view(len(names), len(templates), -1)
    return F.normalize(features.mean(1), dim=-1)


def accuracy(model, tokenizer, state, split):
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        weights = class_weights(model, tokenizer, split.name.split("/")[0])
        predicted = (F.normalize(model.encode_image(images_to_tensor(split.images)), dim=-1) @ weights.T).argmax(1)
    return 100.0 * (predicted == torch.tensor(split.targets)).float().mean().item()


def train_expert(model, tokenizer, theta0, train):
    model.load_state_dict(theta0)
    model.train()
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if n != "logit_scale"], lr=LR, weight_decay=0.1)
    images, labels = images_to_tensor(train.images), torch.tensor(train.targets)
    order = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        lr = LR * (step + 1) / WARMUP if step < WARMUP else LR * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = torch.randint(0, len(labels), (BATCH,), generator=order)
        weights = class_weights(model, tokenizer, train.name.split("/")[0])
        logits = model.logit_scale.exp() * F.normalize(model.encode_image(images[batch]), dim=-1) @ weights.T
        loss = F.cross_entropy(logits, labels[batch], label_smoothing=0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    delta = task_delta({k: v.detach().clone() for k, v in model.state_dict().items()}, theta0)
    delta.pop("logit_scale", None)
    return delta


def cosine(a, b):
    dot = sum((a[k] * b[k]).sum().item() for k in a)
    return dot / math.sqrt(sum((a[k] ** 2).sum().item() for k in a) * sum((b[k] ** 2).sum().item() for k in a))


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, tokenizer = load_tiny_clip()
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    splits = {d: (make_domain_split(d, "train", n_per_class=200), make_domain_split(d, "test", n_per_class=50))
              for d in DOMAIN_NAMES}
    deltas = {}
    for domain in DOMAIN_NAMES:
        deltas[domain] = train_expert(model, tokenizer, theta0, splits[domain][0])
        score = accuracy(model, tokenizer, apply_delta(theta0, deltas[domain]), splits[domain][1])
        print(f"{domain}: expert from theta_0 {score:.1f} %", flush=True)
    unified = None
    for t, domain in enumerate(DOMAIN_NAMES):
        unified = add_task(unified, deltas[domain])
        parts = []
        for i, stored in enumerate(DOMAIN_NAMES[: t + 1]):
            rebuilt = decouple(unified, i)
            score = accuracy(model, tokenizer, apply_delta(theta0, rebuilt), splits[stored][1])
            parts.append(f"{stored} {score:.1f} (cos {cosine(rebuilt, deltas[stored]):.2f}, "
                         f"lambda {unified.rescalers[i]:.2f})")
        print(f"after {domain}: " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
