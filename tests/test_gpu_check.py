"""bench/gpu_check.py, the script a lent GPU machine runs, exercised on CPU: every check runs and reports."""

from __future__ import annotations

import json

from tests.helpers import load_bench


def load_gpu_check():
    return load_bench("gpu_check")


def test_every_check_runs_on_cpu_and_the_report_says_so(tmp_path):
    gpu_check = load_gpu_check()
    out = tmp_path / "gpu_check.json"
    report = gpu_check.main(["--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    checks = report["checks"]
    assert set(checks) == {"grpo_bf16", "ppo_bf16", "qlora", "learned_rm", "heldout_kl", "merged_generation"}
    failed = {k: v.get("error") for k, v in checks.items() if v["status"] != "ok"}
    assert not failed, failed
    assert checks["merged_generation"]["identical_tokens"] and checks["merged_generation"]["weights_bit_identical"]
    assert checks["heldout_kl"]["kl_to_ref"][0] == 0.0 or abs(checks["heldout_kl"]["kl_to_ref"][0]) < 1e-4
    assert checks["learned_rm"]["fp32_max_abs_diff_vs_cpu"] < 1e-5
    assert report["environment"]["trl"] and report["environment"]["device"] == "cpu"


def test_a_failing_check_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()

    def broken(ctx):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setitem(gpu_check.CHECKS, "qlora", broken)
    report = gpu_check.main(["--device", "cpu", "--checks", "qlora", "merged_generation",
                             "--out", str(tmp_path / "r.json")])
    assert report["checks"]["qlora"]["status"] == "failed"
    assert "no kernel image" in report["checks"]["qlora"]["error"]
    assert report["checks"]["merged_generation"]["status"] == "ok"
