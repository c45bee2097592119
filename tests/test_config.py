import pytest

from condu_bench.config import RunConfig, apply_overrides, config_hash, from_dict, load_config, to_dict
from condu_bench.errors import UnknownNameError, UserError


def write(tmp_path, text, name="bench.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "name: x\nmethods: [zeroshot]\ntrain: {lr: 1e-5}\n")
    cfg = load_config(path, ["methods=zeroshot,finetune", "train.iterations=7", "seeds=1,2", "model.quick_gelu=true"])
    assert cfg.methods == ["zeroshot", "finetune"]
    assert cfg.train.iterations == 7
    assert cfg.train.lr == pytest.approx(1e-5)  # YAML reads 1e-5 as a string; it is coerced
    assert cfg.seeds == [1, 2]
    assert cfg.model.quick_gelu is True
    assert cfg.train.batch_size == RunConfig().train.batch_size


def test_single_values_become_lists():
    cfg = from_dict(RunConfig, apply_overrides({}, ["methods=finetune", "seeds=3"]))
    assert cfg.methods == ["finetune"] and cfg.seeds == [3]


def test_unknown_key_suggests(tmp_path):
    path = write(tmp_path, "train:\n  iteratons: 5\n")
    with pytest.raises(UserError, match=r"unknown key 'iteratons'; did you mean 'iterations'"):
        load_config(path)


def test_unknown_top_level_override():
    with pytest.raises(UserError, match="did you mean 'methods'"):
        load_config(None, ["method=finetune"])


def test_wrong_types_are_rejected():
    with pytest.raises(UserError, match=r"train.iterations: expected an integer"):
        load_config(None, ["train.iterations=many"])
    with pytest.raises(UserError, match=r"train.lr: expected a number"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(UserError, match="expected true or false"):
        load_config(None, ["progress=maybe"])


def test_invalid_choices_and_names():
    with pytest.raises(UserError, match="train.optimizer='adam'"):
        load_config(None, ["train.optimizer=adam"])
    with pytest.raises(UnknownNameError, match="did you mean 'finetune'"):
        load_config(None, ["methods=zeroshot,finetun"])
    with pytest.raises(UnknownNameError, match="unknown scenario 'synthetic_mtl'"):
        load_config(None, ["scenario.name=synthetic_mtl"])


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="invalid YAML"):
        load_config(write(tmp_path, "methods: [zeroshot\n"))
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n", "list.yaml"))
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_include_merges_and_overrides(tmp_path):
    write(tmp_path, "name: base\ntrain: {iterations: 10, lr: 0.001}\nmethods: [zeroshot]\n", "base.yaml")
    path = write(tmp_path, "include: base.yaml\nname: variant\ntrain: {iterations: 20}\n")
    cfg = load_config(path)
    assert (cfg.name, cfg.train.iterations, cfg.train.lr, cfg.methods) == ("variant", 20, 0.001, ["zeroshot"])


def test_bad_override_syntax():
    with pytest.raises(UserError, match="key=value"):
        load_config(None, ["=3"])


def test_hash_is_stable_and_sensitive():
    a = to_dict(load_config(None, ["train.iterations=5"]))
    b = to_dict(load_config(None, ["train.iterations=5"]))
    c = to_dict(load_config(None, ["train.iterations=6"]))
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_default_benchmark_file_is_valid():
    from condu_bench.cli import resolve_benchmark

    cfg = load_config(resolve_benchmark(None))
    assert cfg.scenario.name == "synthetic_mtil"
    assert "zeroshot" in cfg.methods and "finetune" in cfg.methods
