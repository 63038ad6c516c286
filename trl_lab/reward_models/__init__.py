"""Everything about a learned scalar reward model, bottom to top.

* :mod:`~trl_lab.reward_models.loading`: a sequence classifier from a hub id, a directory or a PEFT adapter, on its
  own device, safetensors only; batched, length-sorted scoring;
* :mod:`~trl_lab.reward_models.inputs`: (prompt, completion) rendered as TRL's ``RewardTrainer`` trained the RM;
* :mod:`~trl_lab.reward_models.scorer`: :class:`~trl_lab.reward_models.scorer.ScalarRewardModel`, the two joined:
  raw scores, what RL and the audit both call;
* :mod:`~trl_lab.reward_models.normalization`: fixed/running normalisation and clipping of raw scores;
* :mod:`~trl_lab.reward_models.training`: trl_lab's ``RewardConfig``/``RewardTrainer`` (TRL's plus checks);
* :mod:`~trl_lab.reward_models.audit`: held-out pairs and probes -> a verdict;
* :mod:`~trl_lab.reward_models.gate`: cached verdicts by RM fingerprint, and the refusal before RL.

The ``learned_rm`` reward plugin (:mod:`trl_lab.rewards.learned_rm`) sits on top of this wing.
"""
