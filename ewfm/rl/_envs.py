"""Lock-step batches of Gymnasium environments, in process or split over worker processes.

Like ``gymnasium.vector.SyncVectorEnv`` / ``AsyncVectorEnv`` but every episode is reset
with its own seed and only the environments that are still running are stepped (finished
ones wait, so a batch of episodes of different lengths wastes no simulation). With
``workers > 1`` the environments are split into that many contiguous groups, each stepped
by its own process (the physics is the cost; the batched policy call is cheap).
"""

import contextlib
import multiprocessing as mp
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._deps import gymnasium

StepOut = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_env(env_id: str, max_episode_steps: int = 1000) -> Any:
    """One Gymnasium environment with the time limit that marks truncation."""
    gym = gymnasium()
    return gym.make(env_id, max_episode_steps=max_episode_steps, disable_env_checker=True)


class _Group:
    """Environments stepped in this process."""

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


def _worker(conn: Any, env_id: str, n: int, max_episode_steps: int) -> None:
    group = _Group(env_id, n, max_episode_steps)
    conn.send("ready")
    while True:
        cmd, *args = conn.recv()
        if cmd == "close":
            group.close()
            conn.close()
            return
        try:
            conn.send(getattr(group, cmd)(*args))
        except Exception as e:  # pragma: no cover - surfaced in the parent
            conn.send(e)


class LockstepEnvs:
    """``n`` environments addressed by index 0..n-1; ``workers`` processes (0 or 1: in process)."""

    def __init__(self, env_id: str, n: int, *, workers: int = 0, max_episode_steps: int = 1000):
        self.n = n
        workers = max(1, min(workers, n))
        self._bounds = np.linspace(0, n, workers + 1).astype(int)
        self._local: _Group | None = None
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        if workers == 1:
            self._local = _Group(env_id, n, max_episode_steps)
            probe = self._local.envs[0]
        else:
            ctx = mp.get_context("forkserver")
            for w in range(workers):
                size = int(self._bounds[w + 1] - self._bounds[w])
                parent, child = ctx.Pipe()
                p = ctx.Process(
                    target=_worker, args=(child, env_id, size, max_episode_steps), daemon=True
                )
                p.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(p)
            for c in self._conns:
                c.recv()
            probe = make_env(env_id, max_episode_steps)
        self.observation_shape = tuple(probe.observation_space.shape)
        self.action_shape = tuple(probe.action_space.shape)
        self.action_low = np.asarray(probe.action_space.low, np.float32)
        self.action_high = np.asarray(probe.action_space.high, np.float32)
        if self._local is None:
            probe.close()

    def _split(self, idx: np.ndarray) -> list[np.ndarray]:
        return [
            np.flatnonzero((idx >= self._bounds[w]) & (idx < self._bounds[w + 1]))
            for w in range(len(self._conns))
        ]

    def reset(self, idx: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Reset environments ``idx`` with ``seeds``; their first observations ``[k, obs]``."""
        idx = np.asarray(idx)
        if self._local is not None:
            return self._local.reset([(int(i), int(s)) for i, s in zip(idx, seeds, strict=True)])
        out = np.empty((len(idx), *self.observation_shape))
        parts = self._split(idx)
        for w, sel in enumerate(parts):
            if len(sel):
                lo = self._bounds[w]
                items = [(int(idx[j] - lo), int(seeds[j])) for j in sel]
                self._conns[w].send(("reset", items))
        for w, sel in enumerate(parts):
            if len(sel):
                out[sel] = self._recv(w)
        return out

    def step(self, idx: np.ndarray, actions: np.ndarray) -> StepOut:
        """Step environments ``idx`` with ``actions [k, act]``: next obs, reward, done flags."""
        idx = np.asarray(idx)
        if self._local is not None:
            return self._local.step(idx.tolist(), actions)
        k = len(idx)
        obs = np.empty((k, *self.observation_shape))
        rew, term, trunc = np.empty(k), np.empty(k, bool), np.empty(k, bool)
        parts = self._split(idx)
        for w, sel in enumerate(parts):
            if len(sel):
                lo = self._bounds[w]
                self._conns[w].send(("step", (idx[sel] - lo).tolist(), actions[sel]))
        for w, sel in enumerate(parts):
            if len(sel):
                obs[sel], rew[sel], term[sel], trunc[sel] = self._recv(w)
        return obs, rew, term, trunc

    def _recv(self, w: int) -> Any:
        out = self._conns[w].recv()
        if isinstance(out, Exception):
            raise out
        return out

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        for c, p in zip(self._conns, self._procs, strict=True):
            with contextlib.suppress(BrokenPipeError, OSError):
                c.send(("close",))
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> "LockstepEnvs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
