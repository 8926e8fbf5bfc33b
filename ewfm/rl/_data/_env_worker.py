"""A group of Gymnasium environments, stepped in this process or in a worker process.

`LockstepEnvs` (``_envs.py``) uses `EnvGroup` directly, or runs this file as a script,
``python _env_worker.py ENV_ID N MAX_EPISODE_STEPS``, so that a worker imports only
gymnasium, MuJoCo and numpy — not ewfm and JAX, which would cost seconds per worker.
Commands arrive pickled on stdin; results leave pickled on the original stdout (fd 1 is
pointed at stderr first, so nothing else can write into that stream).
"""

import os
import pickle
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

StepOut = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def mujoco_warning(message: str) -> None:
    """MuJoCo's warning hook: drop the harmless 'settotalmass' deprecation, forward the rest.

    MuJoCo >= 4 warns (to stderr and ./MUJOCO_LOG.TXT) about the deprecated 'settotalmass'
    attribute of Gymnasium's HalfCheetah XML at every model load.
    """
    if "settotalmass" not in message:
        warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)


def make_env(env_id: str, max_episode_steps: int = 1000) -> Any:
    """One Gymnasium environment with the time limit that marks truncation."""
    import gymnasium as gym
    import mujoco

    mujoco.set_mju_user_warning(mujoco_warning)  # pyright: ignore[reportAttributeAccessIssue]
    return gym.make(env_id, max_episode_steps=max_episode_steps, disable_env_checker=True)


class EnvGroup:
    """``n`` environments addressed by index; only the ones named are reset or stepped."""

    def __init__(self, env_id: str, n: int, max_episode_steps: int):
        self.envs = [make_env(env_id, max_episode_steps) for _ in range(n)]

    def reset(self, items: Sequence[tuple[int, int]]) -> np.ndarray:
        return np.stack([np.asarray(self.envs[i].reset(seed=s)[0]) for i, s in items])

    def step(self, idx: Sequence[int], actions: np.ndarray) -> StepOut:
        out = [self.envs[i].step(a) for i, a in zip(idx, actions, strict=True)]
        obs = np.stack([np.asarray(o[0]) for o in out])
        rew = np.array([o[1] for o in out], np.float64)
        term = np.array([o[2] for o in out], bool)
        trunc = np.array([o[3] for o in out], bool)
        return obs, rew, term, trunc

    def close(self) -> None:
        for e in self.envs:
            e.close()


def main() -> None:
    env_id, n, max_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer

    def send(x: Any) -> None:
        pickle.dump(x, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    try:
        group = EnvGroup(env_id, n, max_steps)
    except Exception as e:
        send(e)
        return
    send("ready")
    while True:
        try:
            cmd, *args = pickle.load(inp)
        except EOFError:
            return
        if cmd == "close":
            group.close()
            return
        try:
            send(getattr(group, cmd)(*args))
        except Exception as e:
            send(e)


if __name__ == "__main__":
    main()
