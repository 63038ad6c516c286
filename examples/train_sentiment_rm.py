"""Train the "rewards cheer" sentiment reward model on generated upbeat-vs-flat pairs.

    python examples/train_sentiment_rm.py                                  # tiny random base, about 10 s on CPU
    python examples/train_sentiment_rm.py --model_name_or_path smollm2-135m-instruct --max_steps 200

The job is :mod:`trl_lab.scripts.train_sentiment_rm`.
"""

from trl_lab.scripts.train_sentiment_rm import main

if __name__ == "__main__":
    main()
