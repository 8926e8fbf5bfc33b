"""The bundled behaviour-policy pack: eighteen SB3-zoo MuJoCo policies as numpy arrays.

The forward pass is written once, over an array namespace (``numpy`` or ``jax.numpy``),
and follows ``policies/README.md`` step by step. The dataset builder runs it in numpy
(float64 observation normalisation, float32 network, as the README says); `pack_policy`
runs it in JAX for `evaluate`. See ``policies/LICENSE`` (MIT) for the source of the data.
"""

import functools
import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

POLICY_DIR = Path(__file__).parent.parent / "policies"  # ewfm/rl/policies: package data


@functools.cache
def pack_index() -> dict[str, dict[str, Any]]:
    """``index.json``: one entry per policy (``"hopper/sac"``: env, layers, measured returns)."""
    return json.loads((POLICY_DIR / "index.json").read_text())


@functools.cache
def recipes() -> dict[str, Any]:
    """``recipes.json``: the dataset recipes and D4RL reference returns, per environment."""
    data = json.loads((POLICY_DIR / "recipes.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def check_policy_name(name: str) -> None:
    """Refuse an unknown pack policy with the valid names listed."""
    if name not in pack_index():
        raise ValueError(
            f"unknown pack policy {name!r}; valid names: {', '.join(sorted(pack_index()))}"
        )


@functools.cache
def load_pack_arrays(name: str) -> dict[str, np.ndarray]:
    """The arrays of one policy (``hidden_{i}_w``, ``mean_w``, ``obs_mean``, ...), as stored."""
    check_policy_name(name)
    with np.load(POLICY_DIR / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def _activation(xp: Any, kind: str, h: Any) -> Any:
    if kind == "relu":
        return xp.maximum(h, 0)
    if kind == "tanh":
        return xp.tanh(h)
    if kind == "none":
        return h
    raise ValueError(f"unknown activation {kind!r} in the policy pack")


def _hidden(xp: Any, spec: dict[str, Any], params: dict[str, Any], obs: Any, step: Any) -> Any:
    """The last hidden layer for a batch (time feature, observation normalisation, MLP)."""
    o = obs
    if spec.get("time_feature", False):
        o = xp.concatenate([o, (1.0 - step / 1000.0)[:, None].astype(o.dtype)], axis=1)
    if "obs_mean" in params:
        scale = xp.sqrt(params["obs_var"] + spec["obs_eps"])
        o = xp.clip((o - params["obs_mean"]) / scale, -spec["obs_clip"], spec["obs_clip"])
    h = o.astype(xp.float32)
    i = 0
    while f"hidden_{i}_w" in params:
        pre = h @ params[f"hidden_{i}_w"].T + params[f"hidden_{i}_b"]
        h = _activation(xp, spec["activation"], pre)
        i += 1
    return h


def _log_std(xp: Any, spec: dict[str, Any], params: dict[str, Any], h: Any) -> Any:
    """The Gaussian head's log std (state-dependent, or one learned vector)."""
    if spec["std"] == "state_dependent":
        return xp.clip(h @ params["log_std_w"].T + params["log_std_b"], -20.0, 2.0)
    return params["log_std"]


def policy_forward(
    xp: Any,
    spec: dict[str, Any],
    params: dict[str, Any],
    obs: Any,
    step: Any,
    eps: Any | None,
) -> Any:
    """The README's forward pass for a batch: ``obs [n, o]``, ``step [n]`` -> actions ``[n, a]``.

    ``eps [n, a]`` is standard normal noise for the stochastic policy, or None for the
    deterministic one (``std: none`` policies ignore it).
    """
    h = _hidden(xp, spec, params, obs, step)
    mu = h @ params["mean_w"].T + params["mean_b"]
    if eps is not None and spec["std"] != "none":
        mu = mu + xp.exp(_log_std(xp, spec, params, h)) * eps
    if spec["squash"] == "tanh":
        return xp.tanh(mu)
    if spec["squash"] == "clip":
        return xp.clip(mu, -1.0, 1.0)
    raise ValueError(f"unknown squash {spec['squash']!r} in the policy pack")


class NumpyPackPolicy:
    """The numpy forward pass of one pack policy (used by the dataset builder)."""

    def __init__(self, name: str):
        check_policy_name(name)
        self.name = name
        self.spec = pack_index()[name]
        self.params = load_pack_arrays(name)
        self.action_dim = int(self.params["mean_b"].shape[0])

    def __call__(self, obs: np.ndarray, step: np.ndarray, eps: np.ndarray | None) -> np.ndarray:
        return policy_forward(np, self.spec, self.params, obs, step, eps).astype(np.float32)

    def gaussian(self, obs: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``[n, a]`` of the Gaussian the stochastic policy samples, before its
        squash (``tanh`` or clip to [-1, 1]); the std is 0 for a policy without one."""
        h = _hidden(np, self.spec, self.params, obs, step)
        mu = h @ self.params["mean_w"].T + self.params["mean_b"]
        if self.spec["std"] == "none":
            return mu, np.zeros_like(mu)
        std = np.exp(_log_std(np, self.spec, self.params, h))
        return mu, np.broadcast_to(std, mu.shape).astype(mu.dtype)


class PackPolicy(eqx.Module):
    """A pack policy as a JAX callable for `evaluate`: ``policy(obs [n, o], key, step=[n])``.

    ``stochastic=True`` samples the policy's own Gaussian (what the datasets record);
    otherwise the mean action. Policies with a time feature need the step index within the
    episode, which `evaluate` passes because ``uses_step`` is set.
    """

    params: dict[str, Array]
    name: str = eqx.field(static=True)
    stochastic: bool = eqx.field(static=True)
    time_feature: bool = eqx.field(static=True)

    @property
    def uses_step(self) -> bool:
        return self.time_feature

    @property
    def spec(self) -> dict[str, Any]:
        return pack_index()[self.name]

    @property
    def action_dim(self) -> int:
        return int(self.params["mean_b"].shape[0])

    def __call__(
        self,
        obs: Float[Array, "n obs"],
        key: PRNGKeyArray | None = None,
        step: Float[Array, " n"] | None = None,
    ) -> Float[Array, "n act"]:
        obs = jnp.asarray(obs, jnp.float32)
        n = obs.shape[0]
        if step is None:
            if self.time_feature:
                raise ValueError(
                    f"pack policy {self.name!r} uses a time feature: pass step=[n] "
                    "(the step index within each episode); `evaluate` does this."
                )
            step = jnp.zeros((n,), jnp.float32)
        eps = None
        if self.stochastic:
            if key is None:
                raise ValueError(f"stochastic pack policy {self.name!r} needs a PRNG key")
            eps = jr.normal(key, (n, self.action_dim), jnp.float32)
        return policy_forward(jnp, self.spec, self.params, obs, jnp.asarray(step, jnp.float32), eps)


def pack_policy(name: str, *, stochastic: bool = False) -> PackPolicy:
    """Load a bundled pack policy (e.g. ``"hopper/sac"``) as a JAX policy for `evaluate`.

    Implements the forward pass of ``policies/README.md`` exactly; ``stochastic`` selects the
    sampled (dataset) or the mean (deterministic) action.
    """
    check_policy_name(name)
    spec = pack_index()[name]
    params = {k: jnp.asarray(v) for k, v in load_pack_arrays(name).items()}
    return PackPolicy(
        params=params,
        name=name,
        stochastic=bool(stochastic),
        time_feature=bool(spec.get("time_feature", False)),
    )
