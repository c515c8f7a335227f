"""BTR ("Beyond The Rainbow", Clark, Towers, Evers, Hare, arXiv 2411.03820, ICML 2025):
IQN with Munchausen, a spectral-normed IMPALA trunk with adaptive max-pooling, noisy
dueling heads, PER and vectorised envs. Config, network, pure learner and its side of
the runner's agent protocol."""
