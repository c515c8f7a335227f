"""The reductions of the BBF network, as the tolerance policy needs them.

:mod:`bbf_jax.tolerance` bounds a network output by the length and depth of the sums
behind it, and a gradient also by the number of batch positions its kernel sums over
(where rounding can flip a ReLU or min/max kink). This module reads those numbers off
a :class:`~bbf_jax.agents.bbf.config.NetworkConfig` for 84x84 observations.
"""

from __future__ import annotations

import dataclasses
import math
import re

from bbf_jax import tolerance
from bbf_jax.agents.bbf.config import NetworkConfig

OBS_HW = 84
LATENT_HW = 11  # both encoders map 84x84 to 11x11 (SAME padding)
_IMPALA_WIDTHS = (16, 32, 32)
_DQN_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # channels, kernel, stride
_STAGE_CONV = re.compile(r"ResidualStage_(\d+)/Conv_(\d+)/")


@dataclasses.dataclass(frozen=True)
class Reductions:
    """``forward_length``: the longest dot product of a forward pass (the projection's
    fan-in); ``depth``: stacked layers of the deepest forward path (encoder, the SPR
    rollout's transition convs, projection, predictor/head); ``backward_length``: the
    longest gradient sum (the first conv's kernel over B * H * W)."""

    forward_length: int
    depth: int
    backward_length: int
    config: NetworkConfig
    batch_size: int
    jumps: int

    def output(self, expected) -> tolerance.Tolerance:
        """Bound for a forward output (Q-values, logits, latents, losses)."""
        return tolerance.network_output(expected, self.forward_length, self.depth)

    def conv_positions(self, path: str) -> int | None:
        """B * H * W summed over by the kernel gradient of the conv at flax ``path``
        (``encoder/...``, ``transition_model/...``); None for dense layers."""
        top = path.split("/")[0]
        b = self.batch_size
        if top == "transition_model":
            return b * self.jumps * LATENT_HW**2
        if top != "encoder":
            return None
        if self.config.encoder_type == "dqn":
            hw = OBS_HW
            for i, (_, _, stride) in enumerate(_DQN_LAYERS):
                hw = math.ceil(hw / stride)
                if f"Conv_{i}/" in path + "/":
                    return b * hw * hw
            return None
        match = _STAGE_CONV.search(path + "/")
        if not match:
            return None
        stage, conv = int(match.group(1)), int(match.group(2))
        # Conv_0 runs before the stage's stride-2 max-pool, the block convs after it.
        hw = math.ceil(OBS_HW / 2 ** (stage if conv == 0 else stage + 1))
        return b * hw * hw

    def gradient(self, path: str, expected) -> tolerance.Tolerance:
        """Bound for the gradient of the parameter at flax ``path``.

        Conv kernels and biases allow one kink among their ``B * H * W`` summed
        positions; dense layers sum over only B rows and have few units whose inputs
        can sit within rounding of a ReLU switch, so they get the rounding noise alone.
        """
        positions = self.conv_positions(path)
        noise = tolerance.noise(self.backward_length, 2 * self.depth)
        if positions is None:
            return tolerance.Tolerance(noise * tolerance.magnitude(expected), rel_norm=noise)
        return tolerance.gradient(expected, self.backward_length, 2 * self.depth, positions)

    def gradient_norm(self, expected) -> tolerance.Tolerance:
        """Bound for the global gradient norm: ``| ||a|| - ||e|| | <= ||a - e||``, at most
        the largest relative bound of any leaf (one kink in the smallest conv sum)."""
        fewest = self.batch_size * LATENT_HW**2
        r = tolerance.gradient_relative(self.backward_length, 2 * self.depth, fewest)
        return tolerance.Tolerance(r * tolerance.magnitude(expected))


def network_reductions(config: NetworkConfig, batch_size: int, jumps: int = 5) -> Reductions:
    """The :class:`Reductions` of ``config`` for a batch of ``batch_size`` 84x84 frames
    and an SPR rollout of ``jumps`` steps."""
    if config.encoder_type == "impala":
        widths = [int(w * config.width_scale) for w in _IMPALA_WIDTHS]
        conv_fan_in = 9 * max(widths)
        encoder_depth = len(widths) * (1 + 2 * config.num_blocks)
        first_conv_hw = OBS_HW
        channels = widths[-1]
    else:
        widths = [int(c * config.width_scale) for c, _, _ in _DQN_LAYERS]
        conv_fan_in = max(k * k * c for (_, k, _), c in zip(_DQN_LAYERS, [4] + widths[:-1],
                                                             strict=True))
        encoder_depth = len(widths)
        first_conv_hw = math.ceil(OBS_HW / _DQN_LAYERS[0][2])
        channels = widths[-1]
    projection_fan_in = LATENT_HW**2 * channels
    forward_length = max(conv_fan_in, projection_fan_in, config.hidden_dim)
    # encoder, 2 convs per rollout step, projection, predictor or head hidden + output
    depth = encoder_depth + 2 * jumps + 3
    return Reductions(
        forward_length=forward_length,
        depth=depth,
        backward_length=batch_size * first_conv_hw**2,
        config=config,
        batch_size=batch_size,
        jumps=jumps,
    )
