"""The prompt learner on open_clip's text tower: the untrained prompt is exactly encode_text of the hand-written text."""

import open_clip
import pytest
import torch

from condu_bench.config import ModelConfig
from condu_bench.errors import UserError
from condu_bench.models.configs import register_model_configs
from condu_bench.models.loading import load_model
from condu_bench.prompting import PromptContext

CLASSES = ["circle", "red square", "forest", "annual crop land"]


def model_and_tokenizer(arch, custom_text=False):
    if not custom_text:
        loaded = load_model(ModelConfig(arch=arch, pretrained=None))
        return loaded.model.eval(), loaded.tokenizer
    register_model_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None, force_custom_text=True)
    return model.eval(), open_clip.get_tokenizer(arch)


@pytest.mark.parametrize("arch, custom_text", [("condu-micro-vit", False), ("condu-tiny-vit", False),
                                               ("condu-micro-vit", True)],
                         ids=["micro-CLIP", "tiny-CLIP", "micro-CustomTextCLIP"])
def test_initial_prompt_reproduces_encode_text(arch, custom_text):
    model, tokenizer = model_and_tokenizer(arch, custom_text)
    assert hasattr(model, "text") == custom_text
    prompt = PromptContext(model, tokenizer, n_ctx=4, init="a photo of a")
    with torch.no_grad():
        ours = prompt.text_features(CLASSES)
        reference = model.encode_text(tokenizer([f"a photo of a {c}." for c in CLASSES]), normalize=True)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
        # A per-image shift of zero gives every image the same features; a non-zero one changes them.
        shifted = prompt.text_features(CLASSES, shift=torch.zeros(2, prompt.ctx.shape[1]))
        torch.testing.assert_close(shifted, reference.expand(2, -1, -1), rtol=0, atol=1e-6)
        moved = prompt.text_features(CLASSES, shift=torch.randn(2, prompt.ctx.shape[1]))
        assert (moved[0] - reference).abs().max() > 1e-3
    # The context is the token embeddings of "a photo of a", and it is the only parameter of the prompt learner.
    ids = tokenizer(["a photo of a"])[0, 1:5]
    embedding = (model.text if custom_text else model).token_embedding.weight
    assert torch.equal(prompt.ctx.detach(), embedding[ids])
    assert [n for n, _ in prompt.named_parameters()] == ["ctx"]


def test_gradients_reach_only_the_context():
    model, tokenizer = model_and_tokenizer("condu-micro-vit")
    model.requires_grad_(False)
    prompt = PromptContext(model, tokenizer)
    prompt.text_features(CLASSES).sum().backward()
    assert prompt.ctx.grad is not None and prompt.ctx.grad.abs().sum() > 0


def test_random_init_and_a_wrong_context_length():
    model, tokenizer = model_and_tokenizer("condu-micro-vit")
    torch.manual_seed(0)
    prompt = PromptContext(model, tokenizer, n_ctx=3, init="")
    assert prompt.ctx.shape == (3, 64) and 0.01 < prompt.ctx.std().item() < 0.03
    assert prompt.prompt_prefix == "X X X"
    assert prompt.text_features(CLASSES).shape == (4, 32)
    with pytest.raises(UserError, match=r"'a photo of a' is 4 tokens, but n_ctx is 16"):
        PromptContext(model, tokenizer, n_ctx=16)
