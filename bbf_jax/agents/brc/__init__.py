"""BRC on three LunarLander tasks (Nauman et al., "Bigger, Regularized, Categorical",
arXiv 2505.23150, in a small discrete form), with its baselines Shared DQN and
Independent DQN: one value network for the tasks 'standard', 'windy' and 'heavy',
trained from one shared replay with task ids. Config, networks, pure learner, per-task
reward normalisation and the episode-based runner that trains a vector of seeds with
``jax.vmap``."""
