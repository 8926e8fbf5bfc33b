"""The truth behind `ewfm diagnose critic`: the expected return of a support action at a
dataset state, by rollouts of the dataset's own behaviour policy in the simulator.

A support is executed from the exact simulator state (MuJoCo's positions and velocities
rebuilt from the observation; the unobserved x position does not enter the dynamics, and
the rebuild is checked), then the pack policy that recorded the state acts as it did when
the dataset was built (its Gaussian sampled, its extra noise added, or uniform actions for
a ``random`` part). Every support of a state sees the same noise sequences and the same
environment seed (common random numbers), so the differences between a state's supports
are measured with far less noise than each return.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .._experiment import ConfigError


@dataclasses.dataclass(frozen=True)
class Continuation:
    """How one part of a dataset recipe acted: a pack policy (its Gaussian sampled when
    ``stochastic``), plus ``N(0, noise^2)`` before clipping; or ``random`` (uniform)."""

    policy: str
    stochastic: bool = False
    noise: float = 0.0

    def act(
        self, pack: Any, obs: np.ndarray, step: np.ndarray, draws: tuple[np.ndarray, ...]
    ) -> np.ndarray:
        """Actions for ``obs`` from the pre-drawn noise ``(eps, extra, uniform)``."""
        eps, extra, uniform = draws
        if self.policy == "random":
            return uniform
        a = pack(obs, step.astype(np.float64), eps if self.stochastic else None)
        if self.noise > 0:
            a = np.clip(a + self.noise * extra, -1.0, 1.0)
        return np.asarray(a, np.float64)


def dataset_continuations(recipe: dict[str, Any], size: int) -> tuple[list[Continuation], Any]:
    """The recipe's parts as `Continuation`s and, per transition, the index of its part
    (parts are recorded in order; their transition counts are in the metadata)."""
    parts = recipe.get("parts") or []
    if not parts:
        raise ConfigError(
            "the run's dataset records no behaviour policy (not built by ewfm from the policy "
            "pack): the truth needs the policy that recorded it."
        )
    counts = np.array([int(p["transitions"]) for p in parts])
    if counts.sum() != size:
        raise ConfigError(
            f"the dataset's metadata describes {counts.sum()} transitions but it holds {size}."
        )
    conts = [
        Continuation(p["policy"], bool(p.get("stochastic")), float(p.get("noise", 0.0)))
        for p in parts
    ]
    return conts, np.repeat(np.arange(len(parts)), counts)


def common_noise(seed: int, states: np.ndarray, k: int, horizon: int, act_dim: int) -> np.ndarray:
    """The common random numbers ``[n, K, 3, H, act]``: per state and rollout one
    sequence (the policy's Gaussian, the extra noise, uniform actions), shared by every
    support of the state."""
    out = np.empty((len(states), k, 3, horizon, act_dim))
    for i, row in enumerate(states):
        for r in range(k):
            rng = np.random.default_rng([seed, int(row), r])
            out[i, r, :2] = rng.standard_normal((2, horizon, act_dim))
            out[i, r, 2] = rng.uniform(-1.0, 1.0, (horizon, act_dim))
    return out


class Rollouts:
    """A pool of simulator copies that evaluates support actions in lock step."""

    def __init__(self, env_id: str, conts: list[Continuation], capacity: int):
        from ._data import NumpyPackPolicy, make_env

        self.envs = [make_env(env_id).unwrapped for _ in range(capacity)]
        self.packs = [None if c.policy == "random" else NumpyPackPolicy(c.policy) for c in conts]
        self.conts = conts
        self.nq = int(self.envs[0].model.nq)

    def place(self, env: Any, obs: np.ndarray, seed: int) -> float:
        """Put ``env`` in the state of ``obs`` (x position 0: it does not enter the
        dynamics); the largest error of the rebuilt observation."""
        env.reset(seed=seed)
        o = obs.astype(np.float64)
        if o.shape[0] != env.model.nq - 1 + env.model.nv:
            raise ConfigError(
                f"{env.spec.id if env.spec else 'this environment'}: its observation is not "
                "(positions but x, velocities), so a state cannot be rebuilt from it."
            )
        env.set_state(np.concatenate([[0.0], o[: self.nq - 1]]), o[self.nq - 1 :])
        return float(np.abs(env._get_obs() - o).max())

    def run(
        self,
        obs0: np.ndarray,
        t0: np.ndarray,
        part: np.ndarray,
        actions: np.ndarray,
        noise: np.ndarray,
        *,
        horizon: int,
        gamma: float,
        tick: Callable[[], None],
        seeds: np.ndarray,
    ) -> tuple[np.ndarray, float]:
        """Discounted returns ``[n, M, K]`` of ``actions [n, M, act]`` then the behaviour
        policy, for ``n * M * K`` no larger than the pool; and the state rebuild error."""
        n, m, _ = actions.shape
        k = noise.shape[1]
        ii, jj, rr = (x.ravel() for x in np.meshgrid(*map(np.arange, (n, m, k)), indexing="ij"))
        envs = self.envs[: len(ii)]
        worst = max(self.place(e, obs0[i], int(seeds[i])) for e, i in zip(envs, ii, strict=True))
        ret, alive = np.zeros(len(ii)), np.ones(len(ii), bool)
        obs = np.zeros((len(ii), obs0.shape[1]))
        act = actions[ii, jj].astype(np.float64)
        for h in range(horizon):
            if h > 0:
                for p, cont in enumerate(self.conts):
                    idx = np.flatnonzero(alive & (part[ii] == p))
                    if len(idx):
                        draws = tuple(noise[ii[idx], rr[idx], c, h] for c in range(3))
                        act[idx] = cont.act(self.packs[p], obs[idx], t0[ii[idx]] + h, draws)
            for e in np.flatnonzero(alive):
                o, rew, term, _, _ = envs[e].step(act[e])
                ret[e] += gamma**h * rew
                obs[e] = o
                alive[e] = not term
            tick()
            if not alive.any():
                break
        out = np.zeros((n, m, k))
        out[ii, jj, rr] = ret
        return out, worst


def step_in_episode(ends: np.ndarray, size: int) -> np.ndarray:
    """Each transition's step index within its episode (``ends``: each episode's last
    index), for pack policies with a time feature."""
    starts = np.concatenate([[0], np.asarray(ends) + 1])[:-1]
    idx = np.arange(size)
    return idx - starts[np.searchsorted(starts, idx, side="right") - 1]


def radius_supports(
    data_actions: np.ndarray, m: int, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """``[n, M, act]``: each dataset action, then ``M - 1`` copies moved by uniform offsets
    in ``[-radius, radius]`` per dimension, clipped to the action box ``[-1, 1]``."""
    n, d = data_actions.shape
    moved = data_actions[:, None, :] + rng.uniform(-radius, radius, (n, m - 1, d))
    return np.concatenate([data_actions[:, None, :], np.clip(moved, -1.0, 1.0)], axis=1)


def true_returns(
    pool: Rollouts,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    actions: np.ndarray,
    *,
    rollouts: int,
    horizon: int,
    gamma: float,
    task: Any,
) -> tuple[np.ndarray, float]:
    """Returns ``[n, M, K]`` of every support, chunks of states filling the pool."""
    rows, obs0, t0, part = inputs
    n, m, d = actions.shape
    per = max(1, len(pool.envs) // (m * rollouts))
    noise = common_noise(0, rows, rollouts, horizon, d)
    out, worst = np.zeros((n, m, rollouts)), 0.0
    for lo in range(0, n, per):
        sl = slice(lo, lo + per)
        ticks = [0]

        def tick(_t: list[int] = ticks) -> None:
            _t[0] += 1
            task.advance()

        out[sl], err = pool.run(
            obs0[sl], t0[sl], part[sl], actions[sl], noise[sl],
            horizon=horizon, gamma=gamma, tick=tick, seeds=rows[sl],
        )  # fmt: skip
        task.advance(horizon - ticks[0])  # a chunk whose episodes all ended early
        worst = max(worst, err)
    return out, worst
