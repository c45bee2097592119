from condu_bench.cli import main


def test_bench_reports_side_by_side_ratio(capsys):
    assert main(["bench", "model.arch=condu-micro-vit", "train.batch_size=4", "eval.batch_size=32", "--steps", "1", "--eval-images", "64"]) == 0
    out = capsys.readouterr().out
    assert "| train step, fp32 (batch 4) |" in out and "per-tensor AdamW (batch 4)" in out
    assert float(out.split("fused / per-tensor AdamW training throughput: ")[1].split("x")[0]) > 0
    assert "| evaluation, cached tensors |" in out and "| evaluation, decode every time |" in out
    ratio = float(out.split("cached / decoded evaluation throughput: ")[1].split("x")[0])
    assert ratio > 0
