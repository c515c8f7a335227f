"""SAC + DrQ (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications";
Kostrikov, Yarats, Fergus 2020, "Image Augmentation Is All You Need") from pixels on
CarRacing-v3: config, the shared-encoder actor-critic and its update (with the
gradient-flow rule), and the runner over a frame replay."""
