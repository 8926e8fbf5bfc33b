"""Building D4RL-style datasets on Gymnasium MuJoCo v5 from the bundled policy pack.

A recipe (``policies/recipes.json``) is a list of *parts*: a pack policy (or ``random``),
whether it samples its own Gaussian, extra action noise, and a number of transitions. Parts
are recorded in order; episode ``k`` of a dataset is reset with seed ``seed + k`` and its
action noise comes from its own generator, so the data depend only on the seed (not on the
number of environments or worker processes). A part keeps the longest prefix of whole
episodes that fits its size. ``medium-expert`` is the union of ``medium`` and ``expert``.
Each part's per-state action spread (`action_spread`, at a sample of its recorded states)
goes into the dataset's metadata beside its policy and noise.
"""

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import __version__
from ..._experiment import Progress
from ._envs import LockstepEnvs
from ._minari_io import build_lock, exists_message, load_minari, write_dataset
from ._names import (
    builtin_for_id,
    dataset_id,
    parse_builtin,
    parse_name,
    recipe_versions,
    reference_scores,
)
from ._pack import NumpyPackPolicy, check_policy_name, pack_index, recipes
from ._spread import action_spread, episode_states
from ._store import is_local

NOISE_STREAM = 0x5EED  # second word of an episode's noise seed: independent of the env's
DEFAULT_ENVS = 32
SPREAD_STATES, SPREAD_SAMPLES = 256, 64  # the action spread recorded per part: states, draws
_BUFFERS = ("obs", "act", "rew", "term", "trunc")  # what an episode records per step
OnSteps = Callable[[int], None]


@dataclass(frozen=True)
class Part:
    policy: str
    stochastic: bool
    noise: float
    steps: int


@dataclass(frozen=True)
class Segment:
    """Parts recorded with consecutive episode seeds from ``seed`` (one recipe)."""

    kind: str
    seed: int
    parts: tuple[Part, ...]


def dataset_plan(name: str, *, steps: int | None = None, seed: int | None = None) -> list[Segment]:
    """The segments and part sizes of a built-in dataset (by name, or by its Minari id).

    ``steps`` scales every part by ``steps / recipe_total`` (mixture proportions are kept);
    ``seed`` replaces the recipe seed (segment ``i`` of a combined dataset gets
    ``seed + 1_000_000 * i``).
    """
    if "/" in name:
        builtin = builtin_for_id(name)
        if builtin is None:
            raise ValueError(f"{name!r} is not the id of a built-in recipe; it has no plan")
        name = builtin
    env, kind, version = parse_name(name)
    recipe = recipe_versions(env, kind)[version]
    combine = recipe.get("combine")
    # a combined recipe names its segments as kinds (their current version) or KIND-vN
    segs_of = [parse_name(f"{env}-{k}") for k in combine] if combine else [(env, kind, version)]
    segs = []
    for i, (_, k, v) in enumerate(segs_of):
        r = recipe_versions(env, k)[v]
        parts = tuple(
            Part(
                policy=p["policy"],
                stochastic=bool(p.get("stochastic", False)),
                noise=float(p.get("noise", 0.0)),
                steps=int(p["steps"]),
            )
            for p in r["parts"]
        )
        for p in parts:
            if p.policy != "random":
                check_policy_name(p.policy)
        segs.append(Segment(k, int(r["seed"]) if seed is None else seed + 1_000_000 * i, parts))
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be a positive number of transitions, got {steps}")
        total = sum(p.steps for s in segs for p in s.parts)
        segs = [
            Segment(
                s.kind,
                s.seed,
                tuple(
                    Part(p.policy, p.stochastic, p.noise, max(1, round(steps * p.steps / total)))
                    for p in s.parts
                ),
            )
            for s in segs
        ]
    return segs


class _BatchPolicy:
    """A pack policy's numpy forward pass (the README's, float64 normalisation) on a batch.

    The builder draws the Gaussian noise itself, per episode, so the data do not depend on
    how episodes are spread over environments. BLAS runs single-threaded (see `collect_episodes`):
    for batches this small, threads only add latency, badly so on a busy machine.
    """

    def __init__(self, name: str):
        self.policy = NumpyPackPolicy(name)

    def __call__(self, obs: np.ndarray, step: np.ndarray, eps: np.ndarray | None) -> np.ndarray:
        return self.policy(obs, step.astype(np.float64), eps)


def _actions(
    part: Part,
    policy: _BatchPolicy | None,
    obs: np.ndarray,
    step: np.ndarray,
    rngs: list[np.random.Generator],
    act_dim: int,
) -> np.ndarray:
    """The part's action for each running environment (noise drawn from each episode's rng)."""
    if policy is None:
        a = np.stack([r.uniform(-1.0, 1.0, act_dim) for r in rngs]).astype(np.float32)
    else:
        eps = np.stack([r.standard_normal(act_dim) for r in rngs]) if part.stochastic else None
        a = policy(obs, step, eps)
    if part.noise > 0:
        extra = np.stack([r.standard_normal(act_dim) for r in rngs])
        a = np.clip(a + part.noise * extra, -1.0, 1.0)
    return a.astype(np.float32)


class _Recorder:
    """The episodes of one part in flight over lock-step environments, slot by slot.

    Slot ``i`` runs episode ``slot_ep[i]`` (-1: idle) at step ``slot_t[i]``; finished
    episodes are kept by index, so their order is the seed order whatever the slots did.
    """

    def __init__(
        self, envs: LockstepEnvs, part: Part, first_seed: int, max_episode_steps: int
    ) -> None:
        self.envs, self.part, self.first_seed = envs, part, first_seed
        self.max_episode_steps = max_episode_steps
        n = envs.n
        self.slot_ep = np.full(n, -1)
        self.slot_t = np.zeros(n, np.int64)
        self.obs = np.zeros((n, *envs.observation_shape))
        self.rngs: list[Any] = [None] * n
        self.bufs: list[dict[str, list[Any]]] = [{} for _ in range(n)]
        self.finished: dict[int, dict[str, Any]] = {}
        self.lengths: list[int] = []
        self.next_ep = 0

    def running(self) -> bool:
        return bool((self.slot_ep >= 0).any())

    def _mean_length(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else float(self.max_episode_steps)

    def _expected_total(self) -> float:
        running = self.slot_t[self.slot_ep >= 0]
        return sum(self.lengths) + float(np.maximum(running + 1, self._mean_length()).sum())

    def launch(self, slots: list[int], exact: bool) -> None:
        """Start the next episodes (in seed order) in ``slots`` while they are expected to
        fit (``exact``: while the finished ones provably leave room)."""
        mean = self._mean_length()
        chosen: list[int] = []
        for i in slots:
            if exact:
                need = sum(self.lengths) + len(chosen)
            else:
                need = self._expected_total() + mean * len(chosen)
            if need >= self.part.steps:
                break
            chosen.append(i)
        if not chosen:
            return
        seeds = self.first_seed + self.next_ep + np.arange(len(chosen))
        for j, i in enumerate(chosen):
            self.slot_ep[i], self.slot_t[i] = self.next_ep + j, 0
        self.next_ep += len(chosen)
        first = self.envs.reset(np.array(chosen), seeds)
        for j, i in enumerate(chosen):
            self.rngs[i] = np.random.default_rng((int(seeds[j]), NOISE_STREAM))
            self.obs[i] = first[j]
            self.bufs[i] = {key: [] for key in _BUFFERS}
            self.bufs[i]["obs"].append(first[j])

    def step(self, policy: "_BatchPolicy | None") -> tuple[list[int], int]:
        """One step of every running episode; the slots whose episode ended, and the count."""
        idx = np.flatnonzero(self.slot_ep >= 0)
        live = [self.rngs[i] for i in idx]
        act_dim = int(self.envs.action_shape[0])
        act = _actions(self.part, policy, self.obs[idx], self.slot_t[idx], live, act_dim)
        nobs, rew, term, trunc = self.envs.step(idx, act)
        ended = []
        for j, i in enumerate(idx):
            b = self.bufs[i]
            for key, out in zip(_BUFFERS, (nobs, act, rew, term, trunc), strict=True):
                b[key].append(out[j])
            self.obs[i] = nobs[j]
            self.slot_t[i] += 1
            if term[j] or trunc[j]:
                self._finish(int(i))
                ended.append(int(i))
        return ended, len(idx)

    def _finish(self, i: int) -> None:
        b = self.bufs[i]
        self.finished[int(self.slot_ep[i])] = {
            "seed": int(self.first_seed + self.slot_ep[i]),
            "observations": np.stack(b["obs"]),
            "actions": np.stack(b["act"]),
            "rewards": np.asarray(b["rew"], np.float64),
            "terminations": np.asarray(b["term"], bool),
            "truncations": np.asarray(b["trunc"], bool),
        }
        self.lengths.append(int(self.slot_t[i]))
        self.slot_ep[i], self.slot_t[i] = -1, 0

    def kept(self) -> list[dict[str, Any]]:
        """The longest prefix, in seed order, of finished episodes that fits the part."""
        kept, total = [], 0
        for k in range(len(self.finished)):
            t = len(self.finished[k]["rewards"])
            if total + t > self.part.steps:
                break
            kept.append(self.finished[k])
            total += t
        return kept


def collect_part(
    envs: LockstepEnvs,
    part: Part,
    first_seed: int,
    on_steps: OnSteps | None = None,
    max_episode_steps: int = 1000,
) -> list[dict[str, Any]]:
    """Record whole episodes of one part, seeds ``first_seed, first_seed + 1, ...``.

    Keeps the longest prefix (in seed order) of whole episodes that fits ``part.steps``.
    Episodes are launched in seed order while the launched ones are expected to leave room
    (a running episode counts as the larger of its length so far and the mean finished
    length, or the time limit before any has finished), and always while the finished ones
    provably leave room, so the result does not depend on ``envs.n``.
    """
    policy = None if part.policy == "random" else _BatchPolicy(part.policy)
    rec = _Recorder(envs, part, first_seed, max_episode_steps)
    rec.launch(list(range(envs.n)), exact=False)
    while True:
        if not rec.running():
            rec.launch(list(range(envs.n)), exact=True)  # all done: launch only what fits
            if not rec.running():
                break
        ended, stepped = rec.step(policy)
        if on_steps is not None:
            on_steps(stepped)
        if ended:
            rec.launch(ended, exact=False)
    return rec.kept()


@dataclass
class BuildReport:
    """What a build recorded, per part, and how fast (for metadata and the CLI)."""

    dataset_id: str
    episodes: int
    transitions: int
    seconds: float
    simulated_steps: int
    parts: list[dict[str, Any]]
    returns: np.ndarray

    @property
    def steps_per_second(self) -> float:
        return self.simulated_steps / max(self.seconds, 1e-9)


def _default_workers(total_steps: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(2, cores or 1) if total_steps >= 200_000 else 1


def collect_episodes(
    name: str,
    *,
    steps: int | None = None,
    seed: int | None = None,
    n_envs: int = DEFAULT_ENVS,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], BuildReport]:
    """Record every part of a built-in dataset; the episodes (in order) and a report."""
    env, _ = parse_builtin(name)
    if n_envs < 1:
        raise ValueError(f"n_envs must be a positive number of environments, got {n_envs}")
    env_id = recipes()[env]["env"]
    segs = dataset_plan(name, steps=steps, seed=seed)
    total = sum(p.steps for s in segs for p in s.parts)
    workers = _default_workers(total) if workers is None else workers
    episodes: list[dict[str, Any]] = []
    parts_meta: list[dict[str, Any]] = []
    simulated = 0
    start = time.perf_counter()
    with (
        Progress(progress, log_lines=True) as bars,
        _single_threaded_blas(),
        LockstepEnvs(env_id, n_envs, workers=workers) as envs,
    ):
        bar = bars.task(f"building {name}", total)
        for seg in segs:
            ep_seed = seg.seed
            for part in seg.parts:
                shown = 0  # steps of this part on the bar: at most its size

                def tick(k: int, _cap: int = part.steps) -> None:
                    nonlocal simulated, shown
                    simulated += k
                    step = min(shown + k, _cap) - shown
                    shown += step
                    bar.advance(step)

                eps = collect_part(envs, part, ep_seed, tick)
                bar.advance(part.steps - shown)
                parts_meta.append(_part_record(seg, part, ep_seed, eps))
                episodes.extend(eps)
                ep_seed += len(eps)
    seconds = time.perf_counter() - start
    if not episodes:
        raise ValueError(
            f"steps={steps} is too small for {name}: no whole episode fits; ask for more steps"
        )
    report = BuildReport(
        dataset_id=dataset_id(name),
        episodes=len(episodes),
        transitions=sum(len(e["rewards"]) for e in episodes),
        seconds=seconds,
        simulated_steps=simulated,
        parts=parts_meta,
        returns=np.array([float(e["rewards"].sum()) for e in episodes]),
    )
    return episodes, report


def _part_record(seg: Segment, part: Part, first_seed: int, eps: list[dict[str, Any]]) -> dict:
    """What one recorded part holds (the dataset's metadata and `BuildReport.parts`)."""
    return {
        "segment": seg.kind,
        "policy": part.policy,
        "stochastic": part.stochastic,
        "noise": part.noise,
        "steps": part.steps,
        "first_seed": first_seed,
        "episodes": len(eps),
        "transitions": sum(len(e["rewards"]) for e in eps),
        "source": pack_index()[part.policy]["source"]
        if part.policy != "random"
        else "uniform random actions in [-1, 1]",
        "action_spread": _part_spread(part, eps, first_seed),
    }


def _part_spread(part: Part, eps: list[dict[str, Any]], first_seed: int) -> dict | None:
    """The part's per-state action spread (`action_spread`) at up to `SPREAD_STATES` of its
    recorded states; its own random stream, so the data do not depend on it."""
    if not eps:
        return None
    obs, t = episode_states(eps, SPREAD_STATES, first_seed)
    spread = action_spread(
        part.policy,
        obs,
        t,
        stochastic=part.stochastic,
        noise=part.noise,
        samples=SPREAD_SAMPLES,
        seed=first_seed,
        action_dim=int(np.asarray(eps[0]["actions"]).shape[1]),
    )
    return spread.as_dict()


def _single_threaded_blas() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - only slower
        return contextlib.nullcontext()
    return threadpool_limits(1)


def build_dataset(
    name: str,
    *,
    steps: int | None = None,
    overwrite: bool = False,
    seed: int | None = None,
    progress: bool = True,
    n_envs: int = DEFAULT_ENVS,
    workers: int | None = None,
) -> str:
    """Build a built-in dataset (``"hopper-medium"``) as a local Minari dataset; its id.

    ``steps=None`` builds the recipe's full size, otherwise every part is scaled to a total of
    about ``steps`` transitions. Deterministic for a given ``seed`` (default: the recipe's).
    ``n_envs`` environments run in lock step; ``workers`` processes step them (default: 2
    for builds of 200k steps or more, else in process). Refuses to replace an existing
    dataset unless ``overwrite``. The recipe, the parts as recorded and the build's speed
    go into the dataset's metadata (`dataset_info` shows them).
    """
    env, kind, version = parse_name(name)
    id_ = dataset_id(name)
    if is_local(id_) and not overwrite:
        raise FileExistsError(exists_message(id_))
    with build_lock(id_):
        episodes, report = collect_episodes(
            name, steps=steps, seed=seed, n_envs=n_envs, workers=workers, progress=progress
        )
        env_id = recipes()[env]["env"]
        ref_min, ref_max = reference_scores(env)
        meta = {
            "ewfm": {
                "name": name,
                "env_id": env_id,
                "kind": kind,
                "version": version,
                "steps_requested": steps,
                "seed": seed,
                "parts": report.parts,
                "n_envs": n_envs,
                "build_seconds": round(report.seconds, 3),
                "simulated_steps": report.simulated_steps,
                "steps_per_second": round(report.steps_per_second, 1),
                "ewfm_version": __version__,
            }
        }
        write_dataset(
            id_,
            episodes,
            env_id=env_id,
            ref_min=ref_min,
            ref_max=ref_max,
            algorithm_name="ewfm policy-pack recipe " + name,
            description=_description(name, env_id, report),
            extra_metadata=meta,
            overwrite=overwrite,
        )
    return id_


def _description(name: str, env_id: str, report: BuildReport) -> str:
    parts = "; ".join(
        f"{p['policy']} ({'stochastic' if p['stochastic'] else 'deterministic'}, noise "
        f"{p['noise']}, {p['transitions']} transitions, {p['episodes']} episodes)"
        for p in report.parts
    )
    return (
        f"D4RL-style {name} on Gymnasium {env_id}, regenerated by ewfm from the "
        f"SB3-zoo policy pack: {parts}."
    )


def ensure_dataset(name_or_id: str, *, steps: int | None = None, progress: bool = True) -> str:
    """The Minari id of a dataset, building a built-in recipe first if it is not local.

    An existing dataset is returned as it is (whatever ``steps`` it was built with). Other
    Minari ids must already be local (or downloaded): a missing one is refused with how to
    get it. A build of the same id running in another process is refused, not repeated.
    """
    id_ = dataset_id(name_or_id)
    if is_local(id_):
        return id_
    builtin = builtin_for_id(id_)
    if builtin is None:
        load_minari(id_)  # raises the download / build hint
        return id_
    return build_dataset(builtin, steps=steps, progress=progress)
