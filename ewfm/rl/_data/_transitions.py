"""The offline-RL data record shared by datasets, critics and QIPO."""

import equinox as eqx
import numpy as np
from jaxtyping import Float


class Transitions(eqx.Module):
    """A dataset of transitions ``(s, a, r, s', terminal)`` as arrays sharing a leading axis.

    ``terminals`` is 1.0 only where the episode truly ended (the environment terminated):
    bootstrapping stops there. ``timeouts`` is 1.0 where a time limit cut the episode
    (bootstrapping must continue). Episode ``k`` ends at the k-th index where either is 1.
    """

    observations: Float[np.ndarray, "n obs"]
    actions: Float[np.ndarray, "n act"]
    rewards: Float[np.ndarray, " n"]
    next_observations: Float[np.ndarray, "n obs"]
    terminals: Float[np.ndarray, " n"]
    timeouts: Float[np.ndarray, " n"]

    @property
    def size(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        """Indices of the last transition of each (terminated or truncated) episode."""
        return np.flatnonzero((np.asarray(self.terminals) + np.asarray(self.timeouts)) > 0)
