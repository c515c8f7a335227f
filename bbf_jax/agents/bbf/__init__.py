"""BBF (Schwarzer et al., ICML 2023) and the Atari 100k agents it generalises (DER, SPR,
SR-SPR, DrQ(eps)): config, pure learner, shrink-and-perturb resets, action selection."""
