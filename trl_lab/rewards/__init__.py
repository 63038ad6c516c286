"""Reward sources as plugins: the registry, the specs that name them in a config, and the built-in plugins.

* :mod:`~trl_lab.rewards.registry`: ``register_reward``, ``get_reward``, entry points, the checked ``Reward`` wrapper
  (timeouts, private copies of the inputs, finite values);
* :mod:`~trl_lab.rewards.specs`: ``{name, weight, kwargs, timeout}`` specs from YAML or the CLI, built into TRL's
  ``reward_funcs`` and ``reward_weights``;
* :mod:`~trl_lab.rewards.weighted_sum`: the check that the run's weighted rewards add up to a finite float32;
* built-in plugins, registered when the registry is first used: ``gsm8k`` / ``gsm8k_format``
  (:mod:`~trl_lab.rewards.gsm8k`), ``learned_rm`` (:mod:`~trl_lab.rewards.learned_rm`), ``length``
  (:mod:`~trl_lab.rewards.length`), ``sentiment`` (:mod:`~trl_lab.rewards.sentiment`).

Nothing is imported here, so ``import trl_lab.rewards.registry`` does not load torch or a plugin it does not need.
"""
