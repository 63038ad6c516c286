"""``learned_rm``: a learned scalar reward model (or an ensemble of them) as a reward plugin.

.. code-block:: yaml

    rewards:
      - name: learned_rm
        weight: 0.7
        kwargs:
          path: outputs/helpful_rm        # hub id, model dir, or PEFT adapter dir (base + adapter)
          device: cuda:1                  # its own device; default: cuda if present, else cpu
          dtype: bfloat16                 # or float32 / float16 / auto; load_in_4bit: true for bitsandbytes 4-bit
          batch_size: 32
          max_length: 1024                # longer inputs: the prompt is cut from the left, not the completion
          normalize: running              # none | fixed (mean/std, calibration_texts, or the first batch) | running
          clip: 3.0                       # or [low, high]

An ensemble: ``paths: [rm_a, rm_b, rm_c]`` with ``ensemble: mean | min | mean_minus_std`` (``ensemble_k``
times the members' standard deviation below their mean: a pessimistic reward the policy cannot raise by
exploiting one member). Each member is normalised on its own before they are combined; clipping comes
last. The members' disagreement is logged as ``learned_rm/ensemble_std`` through TRL's ``log_metric``.

Each member is a :class:`~trl_lab.reward_models.scorer.ScalarRewardModel` (``self.models``): inputs rendered as
TRL's ``RewardTrainer`` trained the RM, scored in length-sorted batches under ``torch.inference_mode()``. The RL
trainers audit exactly these objects before training (:mod:`trl_lab.reward_models.gate`).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from trl_lab.reward_models.loading import LoadOptions
from trl_lab.reward_models.normalization import RewardNormalizer, clip_rewards, parse_clip
from trl_lab.reward_models.scorer import ScalarRewardModel, compare_tokenizers
from trl_lab.rewards.registry import register_reward

__all__ = ["ENSEMBLE_MODES", "LearnedRewardModel"]

ENSEMBLE_MODES = ("mean", "min", "mean_minus_std")


@register_reward("learned_rm")
class LearnedRewardModel:
    """Reward = score of a learned scalar reward model (or ensemble), optionally normalised and clipped."""

    def __init__(
        self,
        path: str | None = None,
        *,
        paths: Sequence[str] | None = None,
        ensemble: str = "mean",
        ensemble_k: float = 1.0,
        device: str | None = None,
        dtype: str | None = None,
        load_in_4bit: bool = False,
        base_model: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 32,
        max_length: int | None = 1024,
        with_prompt: bool = True,
        append_eos: bool = True,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        policy_tokenizer: str | None = None,
        normalize: str = "none",
        mean: float | None = None,
        std: float | None = None,
        calibration_texts: Sequence[Any] | None = None,
        clip: float | Sequence[float] | None = None,
        plugin: str = "learned_rm",
    ) -> None:
        self.plugin = plugin
        if (path is None) == (paths is None):
            raise ValueError(f"{plugin}: give exactly one of `path` (one reward model) or `paths` (an ensemble)")
        if paths is not None and (isinstance(paths, str) or not isinstance(paths, Sequence) or not paths):
            raise ValueError(f"{plugin}: `paths` must be a non-empty list of model directories or hub ids, got {paths!r}")
        sources = [path] if path is not None else list(paths)  # type: ignore[arg-type]
        if ensemble not in ENSEMBLE_MODES:
            raise ValueError(f"{plugin}: `ensemble` must be one of {list(ENSEMBLE_MODES)}, got {ensemble!r}")
        if isinstance(ensemble_k, bool) or not isinstance(ensemble_k, (int, float)) or ensemble_k < 0:
            raise ValueError(f"{plugin}: `ensemble_k` must be a number >= 0, got {ensemble_k!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"{plugin}: `batch_size` must be a positive integer, got {batch_size!r}")
        if calibration_texts is not None and normalize != "fixed":
            raise ValueError(f"{plugin}: `calibration_texts` sets fixed statistics; it needs normalize: fixed "
                             f"(got normalize: {normalize!r})")
        if calibration_texts is not None and (mean is not None or std is not None):
            raise ValueError(f"{plugin}: give `calibration_texts` or `mean`/`std`, not both")
        try:
            self._normalizers = [RewardNormalizer(normalize, mean=mean, std=std) for _ in sources]
        except ValueError as exc:
            raise ValueError(f"{plugin}: {exc}") from exc
        self.clip = parse_clip(clip, key=f"{plugin}: `clip`")
        self.ensemble = ensemble
        self.ensemble_k = float(ensemble_k)
        options = LoadOptions(device=device, dtype=dtype, load_in_4bit=load_in_4bit, base_model=base_model,
                              trust_remote_code=trust_remote_code, plugin=plugin, key="path" if path else "paths")
        self.models = [
            ScalarRewardModel.load(src, options=options, batch_size=batch_size, max_length=max_length,
                                   with_prompt=with_prompt, append_eos=append_eos,
                                   chat_template_kwargs=dict(chat_template_kwargs or {}))
            for src in sources
        ]
        if policy_tokenizer is not None:
            self._warn_if_tokenizers_differ(policy_tokenizer, trust_remote_code)
        if calibration_texts is not None:
            self.calibrate(calibration_texts)

    def _warn_if_tokenizers_differ(self, policy_tokenizer: Any, trust_remote_code: bool) -> None:
        if isinstance(policy_tokenizer, str):
            from transformers import AutoTokenizer

            policy_tokenizer = AutoTokenizer.from_pretrained(policy_tokenizer, trust_remote_code=trust_remote_code)
        for rm in self.models:
            diffs = compare_tokenizers(rm.tokenizer, policy_tokenizer)
            if diffs:
                warnings.warn(
                    f"{self.plugin}: the reward model {rm.source!r} uses a different tokenizer from the policy "
                    f"({'; '.join(diffs)}); completions are re-rendered as text and re-tokenized for the RM, so "
                    "its scores depend on decoding round-trips", stacklevel=3,
                )

    def calibrate(self, texts: Sequence[Any]) -> None:
        """Fix every member's mean/std from calibration items: completion texts or ``{prompt, completion}``."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise ValueError(f"{self.plugin}: `calibration_texts` must be a non-empty list of texts")
        prompts = [t.get("prompt") if isinstance(t, Mapping) else None for t in texts]
        completions = [t.get("completion", "") if isinstance(t, Mapping) else t for t in texts]
        for rm, norm in zip(self.models, self._normalizers):
            norm.fit(rm.score(prompts if any(p is not None for p in prompts) else None, completions))

    def raw_scores(self, prompts: Sequence[Any] | None, completions: Sequence[Any]) -> list[list[float]]:
        """Unnormalised scores: one list per ensemble member."""
        return [rm.score(prompts, completions) for rm in self.models]

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 completion_ids: Any = None, log_metric: Any = None, **kwargs: Any) -> list[float]:
        if not completions:
            return []
        members = [norm(scores) for norm, scores in zip(self._normalizers, self.raw_scores(prompts, completions))]
        per_sample = list(zip(*members))
        if len(self.models) > 1:
            spreads = [statistics.pstdev(s) for s in per_sample]
            if log_metric is not None:
                log_metric(f"{self.plugin}/ensemble_std", sum(spreads) / len(spreads))
        if self.ensemble == "min":
            combined = [min(s) for s in per_sample]
        elif self.ensemble == "mean_minus_std" and len(self.models) > 1:
            combined = [statistics.fmean(s) - self.ensemble_k * statistics.pstdev(s) for s in per_sample]
        else:
            combined = [statistics.fmean(s) for s in per_sample]
        return clip_rewards(combined, self.clip)

