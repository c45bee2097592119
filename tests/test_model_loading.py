"""Weights in every supported file format reload bit-identically; missing weights are clear errors."""

from pathlib import Path

import pytest
import torch

from condu_bench.atomic_io import sha256_file
from condu_bench.config import ModelConfig
from condu_bench.errors import UnknownNameError, UserError
from condu_bench.models import loading
from condu_bench.models.loading import load_model, uses_quick_gelu

MICRO = "condu-micro-vit"


@pytest.fixture(scope="module")
def reference():
    loaded = load_model(ModelConfig(arch=MICRO, pretrained=None))
    with torch.no_grad():  # move away from the seeded init so a silent re-init would be caught
        for p in loaded.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return {k: v.clone() for k, v in loaded.model.state_dict().items()}


def assert_identical(state, reference):
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


def reload(path: Path, **kw):
    return load_model(ModelConfig(arch=MICRO, pretrained=None, checkpoint=str(path), **kw))


def test_safetensors_roundtrip(tmp_path, reference):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(reference, str(path))
    loaded = reload(path)
    assert_identical(loaded.model.state_dict(), reference)
    assert loaded.info["weights_sha256"] == sha256_file(path) and len(loaded.info["weights_sha256"]) == 64


@pytest.mark.parametrize("suffix, wrap", [(".bin", "plain"), (".pt", "state_dict"), (".pth", "module")])
def test_state_dict_roundtrip(tmp_path, reference, suffix, wrap):
    payload = {
        "plain": reference,
        "state_dict": {"state_dict": reference, "epoch": 3},
        "module": {f"module.{k}": v for k, v in reference.items()},
    }[wrap]
    path = tmp_path / f"w{suffix}"
    torch.save(payload, path)
    assert_identical(reload(path).model.state_dict(), reference)


def test_torchscript_archive_roundtrip_uses_quickgelu(tmp_path, reference):
    model = load_model(ModelConfig(arch=MICRO, pretrained=None)).model
    model.load_state_dict(reference)
    tokens = torch.zeros(2, 16, dtype=torch.long)
    traced = torch.jit.trace(model, (torch.randn(2, 3, 32, 32), tokens), strict=False)
    path = tmp_path / "openai-style.pt"
    traced.save(str(path))
    loaded = reload(path, trust_torchscript=True)  # not an OpenAI release: loaded only when trusted
    assert loaded.info["quick_gelu"] is True  # OpenAI archives were trained with QuickGELU
    assert_identical(loaded.model.state_dict(), reference)


class Scripted(torch.nn.Module):
    """A scripted module that is not a CLIP: its archive holds code that torch.jit.load would run."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.weight


@pytest.fixture
def scripted_archive(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(Scripted()).save(str(path))
    return path


def test_unknown_torchscript_is_refused_unless_trusted(scripted_archive, monkeypatch):
    jit_loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: (jit_loads.append(a), real_load(*a, **k))[1])
    assert loading.is_torchscript_archive(scripted_archive)
    digest = sha256_file(scripted_archive)
    with pytest.raises(UserError, match=rf"TorchScript archive whose SHA-256 \({digest}\) is not one of OpenAI's.*"
                                        "model.trust_torchscript=true"):
        reload(scripted_archive)
    assert jit_loads == []  # refused before any of its code could run
    assert set(loading.read_state_dict(scripted_archive, trust_torchscript=True)) == {"weight"}
    assert len(jit_loads) == 1


def test_openai_release_hashes_come_from_open_clip(scripted_archive, monkeypatch):
    known = loading.openai_release_sha256s()
    # https://openaipublic.azureedge.net/clip/models/<sha256>/ViT-B-16.pt, as open_clip lists it
    assert "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f" in known
    assert len(known) >= 9 and all(len(h) == 64 for h in known)
    digest = sha256_file(scripted_archive)
    monkeypatch.setattr(loading, "openai_release_sha256s", lambda: known | {digest})
    assert set(loading.read_state_dict(scripted_archive)) == {"weight"}  # a known release needs no opt-in


def test_models_check_refuses_unknown_torchscript(scripted_archive, capsys):
    from condu_bench.cli import main

    args = ["models", "check", "--arch", MICRO, "--checkpoint", str(scripted_archive)]
    assert main(args) == 1 and "model.trust_torchscript=true" in capsys.readouterr().out
    assert main([*args, "--trust-torchscript"]) == 0


def test_trusting_torchscript_does_not_change_the_config_hash():
    from condu_bench.config import RunConfig, config_hash
    from condu_bench.experiment import method_run_config

    plain, trusted = RunConfig(), RunConfig(model=ModelConfig(trust_torchscript=True))
    assert config_hash(method_run_config(plain, "finetune", 0, None, plain.train)) == \
        config_hash(method_run_config(trusted, "finetune", 0, None, trusted.train))


def test_unreadable_files_are_user_errors_but_os_errors_propagate(tmp_path, monkeypatch):
    for name, data, match in [("empty.pt", b"", "weights_only=True"), ("junk.pt", b"hello world" * 3, "weights_only=True"),
                              ("junk.safetensors", b"\x00" * 16, "not a readable safetensors file")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=match):
            loading.read_state_dict(tmp_path / name)

    def denied(*args, **kwargs):
        raise PermissionError("permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(PermissionError):  # not disguised as a bad file
        loading.read_state_dict(tmp_path / "empty.pt")


def test_pickled_objects_are_refused(tmp_path, reference):
    import argparse

    path = tmp_path / "evil.pt"  # a class instance needs pickle's code path, which is never taken
    torch.save({"state_dict": reference, "extra": argparse.Namespace(x=1)}, path)
    with pytest.raises(UserError, match="weights_only=True"):
        reload(path)


def test_wrong_architecture_and_missing_file(tmp_path, reference):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v for k, v in reference.items() if k != "text_projection"}, str(path))
    with pytest.raises(UserError, match="does not match the architecture: missing \\['text_projection'\\]"):
        reload(path)
    with pytest.raises(UserError, match="does not exist"):
        reload(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        reload(tmp_path / "junk.safetensors")


def test_unknown_architecture_suggests():
    with pytest.raises(UnknownNameError, match="did you mean"):
        load_model(ModelConfig(arch="ViT-B-61", pretrained=None))


def test_missing_hf_cache_names_file_and_fix(tmp_path):
    with pytest.raises(UserError) as info:
        load_model(ModelConfig(arch="ViT-B-16", pretrained="openai", cache_dir=str(tmp_path)))
    message = str(info.value)
    assert "timm/vit_base_patch16_clip_224.openai" in message
    assert "open_clip_model.safetensors" in message and "huggingface-cli download" in message
    assert "model.checkpoint=" in message


def test_unknown_tag_lists_known_tags():
    with pytest.raises(UserError, match="no pretrained tag 'opneai'.*openai"):
        load_model(ModelConfig(arch="ViT-B-16", pretrained="opneai"))


def fake_hf_cache(cache: Path, repo_id: str, filename: str, state) -> Path:
    """The on-disk layout huggingface_hub uses: models--org--name/{refs/main, snapshots/<rev>/file}."""
    from safetensors.torch import save_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / filename))
    return snapshot / filename


def test_weights_found_in_hf_cache_offline(tmp_path, reference, monkeypatch):
    repo_id = "condu/micro-test"
    path = fake_hf_cache(tmp_path, repo_id, "open_clip_model.safetensors", reference)
    monkeypatch.setattr(loading, "hf_cache_candidates", lambda arch, tag: [(repo_id, "open_clip_model.safetensors")])
    loaded = load_model(ModelConfig(arch=MICRO, pretrained="sometag", cache_dir=str(tmp_path)))
    assert Path(loaded.info["weights_file"]).resolve() == path.resolve()
    assert_identical(loaded.model.state_dict(), reference)


def test_openai_tag_candidates_and_quickgelu_rules():
    assert loading.hf_cache_candidates("ViT-B-16", "openai") == [
        ("timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors"),
        ("timm/vit_base_patch16_clip_224.openai", "open_clip_pytorch_model.bin"),
    ]
    assert uses_quick_gelu(ModelConfig(arch="ViT-B-16", pretrained="openai"), None) is True
    assert uses_quick_gelu(ModelConfig(arch="ViT-B-16-quickgelu", pretrained="openai"), None) is False  # arch has it
    assert uses_quick_gelu(ModelConfig(arch="ViT-B-16", pretrained="laion2b_s34b_b88k"), None) is False
    assert uses_quick_gelu(ModelConfig(arch="ViT-B-16", pretrained="laion2b_s34b_b88k", quick_gelu=True), None) is True


def test_quickgelu_is_really_applied():
    import open_clip

    on = load_model(ModelConfig(arch=MICRO, pretrained=None, quick_gelu=True)).model
    off = load_model(ModelConfig(arch=MICRO, pretrained=None, quick_gelu=False)).model
    act_on = on.transformer.resblocks[0].mlp.gelu
    act_off = off.transformer.resblocks[0].mlp.gelu
    assert isinstance(act_on, open_clip.model.QuickGELU) and not isinstance(act_off, open_clip.model.QuickGELU)


def test_models_check_command(tmp_path, reference, monkeypatch, capsys):
    from condu_bench.cli import main

    assert main(["models", "check", "--arch", "ViT-B-16", "--pretrained", "openai", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("MISSING ViT-B-16/openai") and "huggingface-cli download" in out

    path = fake_hf_cache(tmp_path, "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors", reference)
    assert main(["models", "check", "--arch", "ViT-B-16", "--pretrained", "openai", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok      ViT-B-16/openai") and str(path) in out and "QuickGELU" in out
    assert sha256_file(path)[:16] in out
