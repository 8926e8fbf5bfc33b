"""How different a behaviour policy's actions are within one state: its per-state spread.

An offline method that re-weights the behaviour's own actions (QIPO, best-of-N) can only
choose among actions the data hold near each state, so a near-deterministic behaviour
leaves it nothing to choose. Two measures, per action dimension, at given states:

- ``own_std``: the behaviour's nominal std, ``sqrt(sigma^2 + noise^2)``, where ``sigma`` is
  the std of the Gaussian the pack policy samples (before its ``tanh`` or clip: in the
  units of the Gaussian, not of the action), 0 for a deterministic part, ``1/sqrt(3)``
  for uniform random actions; ``noise`` the recipe's extra ``N(0, noise^2)``.
- ``taken_std``: the spread of the actions it takes: ``samples`` actions drawn per state
  exactly as the builder draws them (Gaussian, squash, extra noise, clip to [-1, 1]), the
  per-state sample variance averaged over the states, square-rooted; its standard error
  comes from the spread of the per-state variances.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from ._pack import NumpyPackPolicy

SPREAD_STREAM = 0x5B2EAD  # second word of the spread's seed: independent of the data's noise
UNIFORM_STD = 1.0 / np.sqrt(3.0)  # std of U(-1, 1)
ActFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class ActionSpread:
    """Per-state action spread of a policy at ``states`` states (`action_spread`)."""

    policy: str
    stochastic: bool
    noise: float
    states: int
    samples: int
    own_std: np.ndarray | None  # [act]: sqrt(sigma^2 + noise^2) averaged over states; None: unknown
    taken_std: np.ndarray  # [act]: sqrt of the mean per-state sample variance of taken actions
    taken_std_se: np.ndarray  # [act]: its standard error over states

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for metadata and results files (4 decimals; means over dimensions)."""

        def r(x: np.ndarray | None) -> list[float] | None:
            return None if x is None else [round(float(v), 4) for v in x]

        own = None if self.own_std is None else round(float(np.mean(self.own_std)), 4)
        return {
            "states": self.states,
            "samples": self.samples,
            "own_std_mean": own,
            "taken_std_mean": round(float(np.mean(self.taken_std)), 4),
            "taken_std_min": round(float(np.min(self.taken_std)), 4),
            "taken_std_max": round(float(np.max(self.taken_std)), 4),
            "own_std": r(self.own_std),
            "taken_std": r(self.taken_std),
            "taken_std_se": r(self.taken_std_se),
        }


def _draw(
    act: ActFn | None,
    obs: np.ndarray,
    step: np.ndarray,
    stochastic: bool,
    noise: float,
    act_dim: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One action per row, drawn as the builder draws it (`act` None: uniform random)."""
    n = obs.shape[0]
    if act is None:
        a = rng.uniform(-1.0, 1.0, (n, act_dim)).astype(np.float32)
    else:
        a = act(obs, step, rng.standard_normal((n, act_dim)) if stochastic else None)
    if noise > 0:
        a = np.clip(a + noise * rng.standard_normal((n, act_dim)), -1.0, 1.0)
    return np.asarray(a, np.float32)


def _own_std(
    policy: str | ActFn,
    obs: np.ndarray,
    step: np.ndarray,
    stochastic: bool,
    noise: float,
    act_dim: int,
) -> np.ndarray | None:
    """``sqrt(sigma^2 + noise^2)`` per dimension, averaged over the states (None: unknown)."""
    if callable(policy):
        return None
    if policy == "random":
        return np.full(act_dim, np.sqrt(UNIFORM_STD**2 + noise**2))
    pol = NumpyPackPolicy(policy)
    if stochastic:
        sigma = pol.gaussian(obs, step)[1].astype(np.float64)
    else:
        sigma = np.zeros((obs.shape[0], pol.action_dim))
    return np.sqrt(sigma**2 + noise**2).mean(0)


def action_spread(
    policy: str | ActFn,
    states: Float[np.ndarray, "n obs"],
    steps: Int[np.ndarray, " n"] | None = None,
    *,
    stochastic: bool = True,
    noise: float = 0.0,
    samples: int = 64,
    seed: int = 0,
    action_dim: int | None = None,
) -> ActionSpread:
    """The per-state action spread of a behaviour policy at ``states`` (see the module).

    ``policy`` is a pack policy name (``"halfcheetah/sac"``), or, with ``action_dim``,
    ``"random"`` (uniform in [-1, 1]) or any ``act(obs [n, o], step [n], eps [n, a] | None)
    -> actions [n, a]`` (``eps`` is None when not ``stochastic``; its ``own_std`` is
    unknown).
    ``steps`` are the states' step indices within their episodes (for policies with a time
    feature; default 0). ``stochastic`` and ``noise`` as in a recipe part.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2 to measure a spread, got {samples}")
    if noise < 0:
        raise ValueError(f"noise must be a std >= 0, got {noise}")
    obs = np.asarray(states, np.float64)
    if obs.ndim != 2 or obs.shape[0] < 1:
        raise ValueError(f"states must be [n, obs] with n >= 1, got shape {list(obs.shape)}")
    n = obs.shape[0]
    step = np.zeros(n) if steps is None else np.asarray(steps, np.float64)
    if isinstance(policy, str) and policy != "random":
        pack = NumpyPackPolicy(policy)
        act: ActFn | None = pack
        action_dim = pack.action_dim if action_dim is None else action_dim
    else:
        act = None if policy == "random" else policy
    if action_dim is None:
        raise ValueError(f"policy {policy!r} needs action_dim (the size of its actions)")
    name = policy if isinstance(policy, str) else getattr(policy, "__name__", "callable")
    rng = np.random.default_rng((seed, SPREAD_STREAM))
    rep_obs, rep_step = np.repeat(obs, samples, 0), np.repeat(step, samples)
    a = _draw(act, rep_obs, rep_step, stochastic, noise, action_dim, rng)
    var = a.astype(np.float64).reshape(n, samples, action_dim).var(1, ddof=1)  # [n, act]
    mean_var = var.mean(0)
    taken = np.sqrt(mean_var)
    se_var = var.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.full(action_dim, np.nan)
    se = np.where(taken > 0, se_var / (2 * np.maximum(taken, 1e-300)), 0.0)
    own = _own_std(policy, obs, step, stochastic, noise, action_dim)
    return ActionSpread(name, bool(stochastic), float(noise), n, samples, own, taken, se)


def episode_states(
    episodes: list[dict[str, Any]], k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``k`` states drawn without replacement from recorded episodes (observations
    before each action) with their step indices, in recorded order."""
    lengths = np.array([len(e["rewards"]) for e in episodes], np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros((0, 0)), np.zeros((0,), np.int64)
    rng = np.random.default_rng((seed, SPREAD_STREAM))
    flat = np.sort(rng.choice(total, size=min(k, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ep = np.searchsorted(starts, flat, side="right") - 1
    t = flat - starts[ep]
    obs = np.stack([episodes[e]["observations"][i] for e, i in zip(ep, t, strict=True)])
    return obs.reshape(len(flat), -1), t
