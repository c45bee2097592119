"""The command line contract: exit 2 with one clear message on bad input; light imports."""

import subprocess
import sys

import pytest

from condu_bench.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "methods=zeroshot,fintune"], "unknown method 'fintune'; did you mean 'finetune'"),
        (["run", "scenario.name=synthetc_mtil"], "did you mean 'synthetic_mtil'"),
        (["run", "train.iteratons=3"], "did you mean 'iterations'"),
        (["run", "does/not/exist.yaml"], "config file not found"),
        (["run", "synthetic_mtl"], "unknown benchmark 'synthetic_mtl'; did you mean 'synthetic_mtil'"),
        (["run", "a.yaml", "b.yaml"], "expected one config"),
    ],
)
def test_bad_input_exits_2_with_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1  # one line, no traceback


@pytest.mark.parametrize(
    "argv, message",
    [
        (["list"], "invalid choice: 'list'; did you mean 'ls'?"),
        (["ls", "method"], "invalid choice: 'method'; did you mean 'methods'?"),
        (["data", "chek"], "invalid choice: 'chek'; did you mean 'check'?"),
        (["nothing-like-it"], "invalid choice: 'nothing-like-it' (choose from run, ls, "),
    ],
)
def test_mistyped_commands_exit_2_with_a_suggestion(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_malformed_yaml_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("methods: [zeroshot\n")
    assert main(["run", str(path)]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_ls_methods_lists_descriptions(capsys):
    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    assert "finetune" in out and "Continual fine-tuning" in out and "zeroshot" in out


def test_help_and_ls_do_not_import_torch_or_avalanche():
    code = (
        "import sys, contextlib, io\n"
        "import condu_bench, condu_bench.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    condu_bench.cli.main(['ls', 'methods']); condu_bench.cli.main(['ls', 'benchmarks'])\n"
        "heavy = [m for m in ('torch', 'avalanche', 'open_clip', 'pandas', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "condu_bench", "--help"], capture_output=True, text=True, check=True).stdout
    assert "run" in out and "ls" in out and "table" in out


def test_table_command_builds_tables_from_result_files(tmp_path, capsys):
    import json

    for method, seed, last in (("finetune", 0, 50.0), ("finetune", 1, 60.0), ("zeroshot", 0, 40.0)):
        run = tmp_path / method / f"seed{seed}"
        run.mkdir(parents=True)
        record = {"scenario": "synthetic_mtil", "protocol": "mtil", "method": method, "seed": seed,
                  "transfer": 30.0, "avg": 45.0, "last": last, "split_convention": "synthetic",
                  "per_dataset": {"a": {"transfer": None, "avg": 45.0, "last": last}}, "datasets": ["a"]}
        (run / "metrics.json").write_text(json.dumps(record))
    assert main(["table", str(tmp_path), "--formats", "md,csv"]) == 0
    written = capsys.readouterr().out.split()
    board = next(p for p in written if "leaderboard" in p and p.endswith(".md"))
    text = open(board).read()
    assert "| finetune |" in text and "| 55.0 |" in text  # seeds 0 and 1 averaged
    assert main(["table", str(tmp_path / "missing")]) == 2
