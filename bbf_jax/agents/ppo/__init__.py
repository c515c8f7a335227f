"""PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms") from pixels on
CarRacing-v3, with a Beta policy (Chou et al. 2017) or a Gaussian one: config, the
actor-critic and its jitted update, and the rollout runner."""
