"""RL training of the SLM (GRPO via TRL): reward functions (:mod:`train.rewards`) and the training
entry point (``python -m train.grpo --config train/recipes/<recipe>.yaml``)."""
