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


def test_order_ii_lora_file_keeps_each_dataset_s_order_i_learning_rate():
    """ConDU's release has LoRA rates for order I only: the order-II file gives each dataset the same one."""
    from condu_bench.cli import resolve_benchmark

    order1, order2 = (load_config(resolve_benchmark(f"mtil_order{n}_lora")) for n in (1, 2))
    assert (order1.scenario.options["order"], order2.scenario.options["order"]) == ("I", "II")
    assert order2.methods == order1.methods == ["condu_lora"]
    assert order2.train.lr_per_task == order1.train.lr_per_task and len(order2.train.lr_per_task) == 11
    assert order2.train.lr_per_task["Flowers102"] == 1.0e-5 and order2.train.precision == "fp32"


def test_include_cycles_name_the_chain(tmp_path):
    write(tmp_path, "include: self.yaml\nname: x\n", "self.yaml")
    with pytest.raises(UserError, match=r"include cycle: .*self\.yaml -> .*self\.yaml"):
        load_config(tmp_path / "self.yaml")
    write(tmp_path, "include: b.yaml\n", "a.yaml")
    write(tmp_path, "include: sub/../a.yaml\n", "b.yaml")  # the same file under another spelling
    with pytest.raises(UserError, match=r"include cycle: \S*a\.yaml -> \S*b\.yaml -> \S*a\.yaml;"):
        load_config(write(tmp_path, "include: a.yaml\n", "top.yaml"))
    (tmp_path / "sub").mkdir()
    write(tmp_path, "include: [a.yaml]\n", "listed.yaml")
    with pytest.raises(UserError, match="`include` must be the name of one YAML file"):
        load_config(tmp_path / "listed.yaml")
    write(tmp_path, "name: base\n", "base.yaml")
    write(tmp_path, "include: base.yaml\n", "one.yaml")
    write(tmp_path, "include: base.yaml\n", "two.yaml")  # a diamond is not a cycle
    assert load_config(write(tmp_path, "include: one.yaml\n", "top2.yaml")).name == "base"


def test_method_config_value_errors_name_the_option():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config:
        alpha: float = 0.5

        def __post_init__(self):
            if not 0.0 <= self.alpha <= 1.0:
                raise ValueError(f"alpha must be within [0, 1], not {self.alpha}")

    assert from_dict(Config, {"alpha": 1}, "method_options.mine").alpha == 1.0
    with pytest.raises(UserError, match=r"^method_options\.mine: alpha must be within \[0, 1\], not 2\.0$"):
        from_dict(Config, {"alpha": 2}, "method_options.mine")


def micro_config(*extra):
    from helpers import micro_overrides

    return load_config(None, micro_overrides("finetune") + list(extra))


@pytest.fixture
def no_training(monkeypatch):
    from condu_bench.training import runner

    def train_task(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "train_task", train_task)


def test_method_option_checks_stop_a_run_before_training(tmp_path, no_training):
    from dataclasses import dataclass

    from condu_bench.experiment import run_experiment
    from condu_bench.method import BaseMethod
    from condu_bench.registries import METHODS

    class Checked(BaseMethod):
        name = "test_checked"

        @dataclass(frozen=True)
        class Config:
            alpha: float = 0.5

            def __post_init__(self):
                if self.alpha > 1:
                    raise ValueError("alpha must be at most 1")

    METHODS.register("test_checked")(Checked)
    try:
        config = micro_config("methods=test_checked", "method_options.test_checked.alpha=3")
        with pytest.raises(UserError, match=r"method_options\.test_checked: alpha must be at most 1"):
            run_experiment(config, tmp_path, log=lambda *_: None)
    finally:
        METHODS._entries.pop("test_checked")


@pytest.mark.parametrize("override, message", [
    ("train.lr_per_task.colors=0.001", r"train\.lr_per_task: 'colors' is not a dataset of scenario synthetic_mtil; "
                                       r"did you mean 'colours'\? \(its tasks: shapes, colours, counts\)"),
    ("train.iterations_per_task.Shapes=5", r"train\.iterations_per_task: 'Shapes' is not a dataset .*did you mean 'shapes'"),
])
def test_per_task_keys_must_be_tasks_of_the_scenario(tmp_path, no_training, override, message):
    from condu_bench.experiment import run_experiment

    with pytest.raises(UserError, match=message):
        run_experiment(micro_config(override), tmp_path, log=lambda *_: None)
    assert not any(tmp_path.iterdir())  # nothing written


def test_inherited_per_task_keys_can_be_dropped(tmp_path):
    config = micro_config("train.lr_per_task.Aircraft=0.001", "train.lr_per_task={}")
    assert config.train.lr_per_task == {}


def test_per_task_keys_that_name_tasks_or_datasets_left_out_are_accepted():
    """A benchmark file's keys (Aircraft, MNIST in mtil_order1.yaml) stay valid when an order leaves them out."""
    from condu_bench.experiment import check_per_task_keys
    from condu_bench.registries import SCENARIOS

    config = micro_config("train.lr_per_task.colours=0.001", "train.iterations_per_task.counts=2",
                          "train.lr_per_task.Aircraft=0.001", "train.lr_per_task.positions=0.001")
    scenario = SCENARIOS.get("synthetic_mtil")(dict(config.scenario.options), seed=0)
    check_per_task_keys(config, scenario)
