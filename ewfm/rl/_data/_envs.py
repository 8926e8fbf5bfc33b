"""Lock-step batches of Gymnasium environments, in process or split over worker processes.

Like ``gymnasium.vector.SyncVectorEnv`` / ``AsyncVectorEnv`` but every episode is reset
with its own seed and only the environments that are still running are stepped (finished
ones wait, so a batch of episodes of different lengths wastes no simulation). With
``workers > 1`` the environments are split into that many contiguous groups, each stepped
by its own process (the physics is the cost; the batched policy call is cheap).
"""

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import gymnasium
from ._env_worker import EnvGroup, StepOut, make_env as _make_env

WORKER_SCRIPT = Path(__file__).with_name("_env_worker.py")


def make_env(env_id: str, max_episode_steps: int = 1000) -> Any:
    """One Gymnasium environment with the time limit that marks truncation."""
    gymnasium()  # the one-line error when the [rl] extra is missing
    return _make_env(env_id, max_episode_steps)


class _Worker:
    """An `EnvGroup` in a child process (``python _env_worker.py``), spoken to by pickle."""

    def __init__(self, env_id: str, n: int, max_episode_steps: int):
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), env_id, str(n), str(max_episode_steps)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def send(self, *msg: Any) -> None:
        assert self.proc.stdin is not None
        pickle.dump(msg, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.flush()

    def recv(self) -> Any:
        assert self.proc.stdout is not None
        try:
            out = pickle.load(self.proc.stdout)
        except EOFError:
            raise RuntimeError(
                f"an environment worker process exited (code {self.proc.poll()}); "
                "see its messages above"
            ) from None
        if isinstance(out, Exception):
            raise out
        return out

    def close(self) -> None:
        try:
            self.send("close")
            self.proc.wait(timeout=10)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class LockstepEnvs:
    """``n`` environments addressed by index 0..n-1; ``workers`` processes (0 or 1: in process)."""

    def __init__(self, env_id: str, n: int, *, workers: int = 0, max_episode_steps: int = 1000):
        self.n = n
        workers = max(1, min(workers, n))
        self._bounds = np.linspace(0, n, workers + 1).astype(int)
        self._local: EnvGroup | None = None
        self._workers: list[_Worker] = []
        gymnasium()
        if workers == 1:
            self._local = EnvGroup(env_id, n, max_episode_steps)
            probe = self._local.envs[0]
        else:
            for w in range(workers):
                size = int(self._bounds[w + 1] - self._bounds[w])
                self._workers.append(_Worker(env_id, size, max_episode_steps))
            try:
                for wk in self._workers:
                    wk.recv()
            except BaseException:
                self.close()
                raise
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
            for w in range(len(self._workers))
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
                self._workers[w].send("reset", [(int(idx[j] - lo), int(seeds[j])) for j in sel])
        for w, sel in enumerate(parts):
            if len(sel):
                out[sel] = self._workers[w].recv()
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
                self._workers[w].send("step", (idx[sel] - self._bounds[w]).tolist(), actions[sel])
        for w, sel in enumerate(parts):
            if len(sel):
                obs[sel], rew[sel], term[sel], trunc[sel] = self._workers[w].recv()
        return obs, rew, term, trunc

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        for wk in self._workers:
            wk.close()
        self._workers = []

    def __enter__(self) -> "LockstepEnvs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
