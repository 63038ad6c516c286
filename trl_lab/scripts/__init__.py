"""The runnable jobs, as TRL's ``trl/scripts/``: each has its ``ScriptArguments`` and a ``main(argv)``.

* :mod:`~trl_lab.scripts.grpo_gsm8k`: GRPO on GSM8K (or a GSM8K-format task) against reward plugins, with the
  held-out watchdogs -- the main job (``examples/grpo_gsm8k.py``);
* :mod:`~trl_lab.scripts.ppo_gsm8k`: the same job with trl_lab's PPO;
* :mod:`~trl_lab.scripts.kl_sweep`: the GRPO job once per KL coefficient, overlaid;
* :mod:`~trl_lab.scripts.train_reward_model`: a GSM8K correctness reward model, trained then audited;
* :mod:`~trl_lab.scripts.train_sentiment_rm`: the "rewards cheer" sentiment reward model;
* :mod:`~trl_lab.scripts.utils`: argument parsing with a default config, and TRL's ``ModelConfig`` turned into
  loading options.

``python -m trl_lab.scripts.<job> --config FILE [flags]`` runs one; the launchers in ``examples/`` add the
example configs as defaults.
"""
