"""trl_lab.rm_gate: audit before RL, cached by the RM's fingerprint and the audit settings, with an override."""

from __future__ import annotations

import pytest

import trl_lab.rm_gate as rm_gate
from trl_lab.data.gsm8k_pairs import build_gsm8k_pairs
from trl_lab.rm_gate import RewardModelAuditError, require_audit, rm_fingerprint
from trl_lab.testing import save_tiny_classifier

ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
]


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = rm_gate.audit_reward_model

    def audit(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rm_gate, "audit_reward_model", audit)
    return calls


def test_failing_rm_is_refused_then_cached_and_overridable(tmp_path, counted):
    rm = save_tiny_classifier(tmp_path / "rm")  # random head: margins far below +1.0
    pairs = build_gsm8k_pairs(ROWS)
    with pytest.raises(RewardModelAuditError, match=r"failed its audit \(.*probe:correct_vs_empty") as err:
        require_audit(rm, pairs, device="cpu")
    assert not err.value.report.passed and len(counted) == 1
    with pytest.warns(UserWarning, match="overridden"):
        report = require_audit(rm, pairs, device="cpu", override=True)
    assert len(counted) == 1  # served from the cache
    assert report.failures == err.value.report.failures
    assert report.chosen_scores == pytest.approx(err.value.report.chosen_scores)


def test_new_weights_or_settings_audit_again(tmp_path, counted):
    rm = save_tiny_classifier(tmp_path / "rm")
    pairs = build_gsm8k_pairs(ROWS)
    lenient = dict(device="cpu", min_margin=-100.0, length_r2_threshold=1.0, min_accuracy=0.0)
    assert require_audit(rm, pairs, **lenient).passed
    assert require_audit(rm, pairs, **lenient).passed and len(counted) == 1
    require_audit(rm, pairs[:1], **lenient)  # other pairs
    assert len(counted) == 2
    before = rm_fingerprint(rm)
    save_tiny_classifier(rm, seed=1)  # retrained weights
    assert rm_fingerprint(rm) != before
    require_audit(rm, pairs, **lenient)
    assert len(counted) == 3
