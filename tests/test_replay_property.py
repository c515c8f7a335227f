"""Property tests: SubsequenceReplay against a slow, obviously-correct reference sampler.

The reference below re-reads spec §4.2-4.6 one sample and one row at a time with plain
Python ints and float32/float64 scalars. It consumes the random stream exactly as the
documented procedure does (one vector of stratified / uniform draws, then one round of
draws per pass over the still-invalid positions), so every output field must match
bit for bit, for random buffers, wrap-around, several envs, every quirk switch and
stack sizes 3 and 4. The sample's stacks are built from its frames and stack mask.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bbf_jax.replay import SubsequenceReplay

MAX_ATTEMPTS = 1000


class Reference:
    def __init__(self, rb: SubsequenceReplay):
        s = rb.storage
        self.L, self.B = s.length, rb.n_envs
        self.obs, self.act, self.rew = s.observation, s.action, s.reward
        self.term, self.ended = s.terminal, s.ended
        self.add_count = s.add_count
        self.cursor = s.add_count % s.length
        self.full = s.add_count >= s.length
        self.T, self.N, self.S = rb.seq_len, rb.max_horizon, rb.stack_size
        self.rb = rb

    # -- spec §4.3
    def valid(self, t, b):
        if t < 0 or t >= self.L:
            return False
        if not self.full:
            if t >= self.cursor - self.N - self.T or t < self.S - 1:
                return False
        window = {(self.cursor - self.N + i) % self.L for i in range(self.S + self.N)}
        if t in window:
            return False
        for i in range(self.N):
            row = (t + i) % self.L
            if self.ended[row, b] and not self.term[row, b]:
                return False
        return True

    # -- spec §4.4
    def ep_start(self, t, b):
        for k in range(self.S - 1):
            row = t - (self.S - 1) + k
            if row >= 0 and self.term[row % self.L, b]:
                return t - self.S + k + 2
        return 0

    def stack(self, s, b, ep_start):
        frames = []
        for i in range(self.S):
            row = s - (self.S - 1) + i  # unwrapped relative to the wrapped row s
            frame = self.obs[row % self.L, b]
            frames.append(frame if row >= ep_start else np.zeros_like(frame))
        return np.stack(frames, axis=-1)

    # -- spec §4.2 draws (float32 descent on the float64 tree)
    def descend(self, target):
        tree = self.rb.sum_tree
        q, idx = np.float32(target), 0
        for _ in range(tree.depth):
            left_sum = np.float32(tree.nodes[2 * idx + 1])
            if q < left_sum:
                idx = 2 * idx + 1
            else:
                q, idx = np.float32(q - left_sum), 2 * idx + 2
        return min(idx - tree.low_idx, tree.highest_set)

    def draw(self, rng, k, first):
        if self.rb.prioritized:
            total = np.float32(self.rb.sum_tree.nodes[0])
            u = rng.random(k, dtype=np.float32)
            out = []
            for i in range(k):
                if first:
                    lo = np.float32(i) / np.float32(k)
                    hi = np.float32(i + 1) / np.float32(k)
                    q = max(lo, np.float32(u[i] * np.float32(hi - lo) + lo))
                else:
                    q = u[i]
                out.append(self.descend(np.float32(q * total)))
            return out
        if self.full:
            lo = self.cursor - self.L + self.S - 1
        else:
            lo = self.S - 1
        t = rng.integers(lo, self.cursor - self.N - self.T, k) % self.L
        b = rng.integers(0, self.B, k)
        return [int(x) * self.B + int(y) for x, y in zip(t, b, strict=True)]

    def sample(self, rng, num, n, gamma):
        idx = self.draw(rng, num, first=True)
        attempts = 0
        while True:
            bad = [i for i in range(num) if not self.valid(idx[i] // self.B, idx[i] % self.B)]
            if not bad:
                break
            attempts += len(bad)
            if attempts > MAX_ATTEMPTS:
                raise RuntimeError("Max sample attempts")
            for i, new in zip(bad, self.draw(rng, len(bad), first=False), strict=True):
                idx[i] = new
        g = [np.float32(math.pow(gamma, k)) for k in range(n + 1)]
        boot = n - 1 if self.rb.nstep_bootstrap == "official" else n
        out = {k: [] for k in ("state", "action", "returns", "discount", "terminal",
                               "next_state", "same_trajectory", "sampling_priority")}
        for row_in_group, ix in enumerate(idx):
            t, b = ix // self.B, ix % self.B
            e = self.ep_start(t, b)
            out["state"].append([self.stack((t + j) % self.L, b, e) for j in range(self.T)])
            out["action"].append([self.act[(t + j) % self.L, b] for j in range(self.T)])
            ret, alive = 0.0, True
            for k in range(n):
                row = (t + k) % self.L
                if alive:
                    ret += float(g[k]) * float(self.rew[row, b])
                alive = alive and not self.term[row, b]
            out["returns"].append(np.float32(ret))
            out["discount"].append(g[n])
            out["terminal"].append(float(any(self.term[(t + k) % self.L, b]
                                             for k in range(boot))))
            out["next_state"].append(self.stack((t + boot) % self.L, b, e))
            d = [bool(self.term[(t + j) % self.L, b]) for j in range(self.T)]
            if self.rb.same_trajectory_mask == "official":
                mask = [1.0] * self.T if row_in_group == 0 else [
                    float(not any(d[: j + 1])) for j in range(self.T)]
            else:
                mask = [float(not any(d[:j])) for j in range(self.T)]
            out["same_trajectory"].append(mask)
            out["sampling_priority"].append(
                np.float32(self.rb.sum_tree.get(np.array([ix]))[0]) if self.rb.prioritized
                else np.float32(1.0))
        out["indices"] = idx
        return {k: np.asarray(v) for k, v in out.items()}


def _clone_rng(rng):
    g = np.random.Generator(np.random.PCG64())
    g.bit_generator.state = rng.bit_generator.state
    return g


@st.composite
def buffers(draw):
    n_envs = draw(st.integers(1, 3))
    T = draw(st.integers(1, 4))
    N = draw(st.integers(1, 5))
    S = draw(st.sampled_from([3, 4]))
    L = draw(st.integers(N + T + S, 40))
    rb = SubsequenceReplay(
        capacity=L * n_envs + draw(st.integers(0, n_envs - 1)),
        n_envs=n_envs, seq_len=T, max_horizon=N, stack_size=S,
        prioritized=draw(st.booleans()),
        nstep_bootstrap=draw(st.sampled_from(["official", "corrected"])),
        same_trajectory_mask=draw(st.sampled_from(["official", "corrected"])),
        seed=draw(st.integers(0, 2**16)), frame_shape=(2, 2),
    )
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    adds = draw(st.integers(N + T + S - 2, 3 * L))  # around the first samplable row
    p_term = draw(st.sampled_from([0.0, 0.1, 0.3]))
    p_end = draw(st.sampled_from([0.0, 0.05, 0.2]))
    for _ in range(adds):
        rb.add(rng.integers(0, 256, (n_envs, 2, 2), dtype=np.uint8),
               rng.integers(0, 18, n_envs), rng.choice([-1.0, -0.3, 0.0, 0.7, 1.0], n_envs),
               rng.random(n_envs) < p_term, rng.random(n_envs) < p_end)
        if rb.prioritized and rng.random() < 0.2:
            k = rng.integers(1, 4)
            written = min(rb.add_count, rb.storage.length) * n_envs
            rb.update_priorities(rng.integers(0, written, k), rng.uniform(0.0, 3.0, k))
    return rb


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rb=buffers(), num=st.integers(1, 12), data=st.data())
def test_sample_matches_reference(rb, num, data):
    n = data.draw(st.integers(1, rb.max_horizon))
    gamma = data.draw(st.sampled_from([0.5, 0.97, 0.99, 0.997]))
    ref = Reference(rb)
    ref_rng = _clone_rng(rb.rng)
    if not rb.can_sample():
        event("too few rows")
        with pytest.raises(RuntimeError, match="cannot sample"):
            rb.sample(num, n, gamma)
        return
    try:
        want = ref.sample(ref_rng, num, n, gamma)
    except RuntimeError:
        event("redraws exhausted")
        with pytest.raises(RuntimeError, match="Max sample attempts"):
            rb.sample(num, n, gamma)
        return
    event("compared" + (" (wrapped)" if rb.storage.is_full else ""))
    sample = rb.sample(num, n, gamma)
    got = {name: getattr(sample, name) for name in want}
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
        if name != "indices":
            assert got[name].dtype == np.asarray(value).dtype or name in (
                "terminal", "same_trajectory", "action"), name
    assert got["action"].dtype == np.int32 and got["indices"].dtype == np.int64
    assert got["terminal"].dtype == got["same_trajectory"].dtype == np.float32
    # Both consumed the random stream identically.
    assert rb.rng.bit_generator.state == ref_rng.bit_generator.state
