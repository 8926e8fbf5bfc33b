"""Building D4RL-style datasets on Gymnasium MuJoCo v5 from the bundled policy pack.

A recipe (``policies/recipes.json``) is a list of *parts*: a pack policy (or ``random``),
whether it samples its own Gaussian, extra action noise, and a number of transitions. Parts
are recorded in order; episode ``k`` of a dataset is reset with seed ``seed + k`` and its
action noise comes from its own generator, so the data depend only on the seed (not on the
number of environments or worker processes). A part keeps the longest prefix of whole
episodes that fits its size. ``medium-expert`` is the union of ``medium`` and ``expert``.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import __version__
from ._envs import LockstepEnvs
from ._minari_io import build_lock, exists_message, load_minari, write_dataset
from ._names import builtin_for_id, dataset_id, parse_builtin, reference_scores
from ._pack import NumpyPackPolicy, check_policy_name, pack_index, recipes
from ._store import is_local

NOISE_STREAM = 0x5EED  # second word of an episode's noise seed: independent of the env's
DEFAULT_ENVS = 32
Progress = Callable[[int], None]


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
    """The segments and part sizes of a built-in dataset.

    ``steps`` scales every part by ``steps / recipe_total`` (mixture proportions are kept);
    ``seed`` replaces the recipe seed (segment ``i`` of a combined dataset gets
    ``seed + 1_000_000 * i``).
    """
    env, kind = parse_builtin(name)
    rec = recipes()[env]
    kinds = rec[kind].get("combine", [kind])
    segs = []
    for i, k in enumerate(kinds):
        r = rec[k]
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


def collect_part(
    envs: LockstepEnvs,
    part: Part,
    first_seed: int,
    on_steps: Progress | None = None,
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
    act_dim = int(envs.action_shape[0])
    n = envs.n
    slot_ep = np.full(n, -1)
    slot_t = np.zeros(n, np.int64)
    cur_obs = np.zeros((n, *envs.observation_shape))
    rngs: list[Any] = [None] * n
    bufs: list[dict[str, list[Any]]] = [{} for _ in range(n)]
    finished: dict[int, dict[str, Any]] = {}
    lengths: list[int] = []
    next_ep = 0

    def expected_total() -> float:
        mean = float(np.mean(lengths)) if lengths else float(max_episode_steps)
        running = slot_t[slot_ep >= 0]
        return sum(lengths) + float(np.maximum(running + 1, mean).sum())

    def launch(slots: list[int], exact: bool) -> None:
        nonlocal next_ep
        mean = float(np.mean(lengths)) if lengths else float(max_episode_steps)
        chosen: list[int] = []
        for i in slots:
            need = sum(lengths) + len(chosen) if exact else expected_total() + mean * len(chosen)
            if need >= part.steps:
                break
            chosen.append(i)
        if not chosen:
            return
        seeds = first_seed + next_ep + np.arange(len(chosen))
        for j, i in enumerate(chosen):
            slot_ep[i], slot_t[i] = next_ep + j, 0
        next_ep += len(chosen)
        first = envs.reset(np.array(chosen), seeds)
        for j, i in enumerate(chosen):
            rngs[i] = np.random.default_rng((int(seeds[j]), NOISE_STREAM))
            cur_obs[i] = first[j]
            bufs[i] = {"obs": [first[j]], "act": [], "rew": [], "term": [], "trunc": []}

    launch(list(range(n)), exact=False)
    while True:
        if not (slot_ep >= 0).any():
            launch(list(range(n)), exact=True)  # all finished: launch only what can still fit
            if not (slot_ep >= 0).any():
                break
        idx = np.flatnonzero(slot_ep >= 0)
        live = [rngs[i] for i in idx]
        act = _actions(part, policy, cur_obs[idx], slot_t[idx], live, act_dim)
        nobs, rew, term, trunc = envs.step(idx, act)
        ended = []
        for j, i in enumerate(idx):
            b = bufs[i]
            b["obs"].append(nobs[j])
            b["act"].append(act[j])
            b["rew"].append(rew[j])
            b["term"].append(term[j])
            b["trunc"].append(trunc[j])
            cur_obs[i] = nobs[j]
            slot_t[i] += 1
            if term[j] or trunc[j]:
                finished[int(slot_ep[i])] = {
                    "seed": int(first_seed + slot_ep[i]),
                    "observations": np.stack(b["obs"]),
                    "actions": np.stack(b["act"]),
                    "rewards": np.asarray(b["rew"], np.float64),
                    "terminations": np.asarray(b["term"], bool),
                    "truncations": np.asarray(b["trunc"], bool),
                }
                lengths.append(int(slot_t[i]))
                slot_ep[i], slot_t[i] = -1, 0
                ended.append(int(i))
        if on_steps is not None:
            on_steps(len(idx))
        if ended:
            launch(ended, exact=False)
    kept, total = [], 0
    for k in range(len(finished)):
        t = len(finished[k]["rewards"])
        if total + t > part.steps:
            break
        kept.append(finished[k])
        total += t
    return kept


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
    import os

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
    env_id = recipes()[env]["env"]
    segs = dataset_plan(name, steps=steps, seed=seed)
    total = sum(p.steps for s in segs for p in s.parts)
    workers = _default_workers(total) if workers is None else workers
    episodes: list[dict[str, Any]] = []
    parts_meta: list[dict[str, Any]] = []
    simulated = 0
    start = time.perf_counter()
    with (
        _progress_bar(progress) as pb,
        _single_threaded_blas(),
        LockstepEnvs(env_id, n_envs, workers=workers) as envs,
    ):
        task = pb.add_task(f"building {name}", total=total) if pb is not None else None

        base = 0
        for seg in segs:
            ep_seed = seg.seed
            for part in seg.parts:
                part_done = 0

                def tick(k: int, _base: int = base, _cap: int = part.steps) -> None:
                    nonlocal simulated, part_done
                    simulated += k
                    part_done += k
                    if pb is not None:
                        pb.update(task, completed=_base + min(part_done, _cap))

                eps = collect_part(envs, part, ep_seed, tick)
                n_steps = sum(len(e["rewards"]) for e in eps)
                base += part.steps
                if pb is not None:
                    pb.update(task, completed=base)
                parts_meta.append(
                    {
                        "segment": seg.kind,
                        "policy": part.policy,
                        "stochastic": part.stochastic,
                        "noise": part.noise,
                        "steps": part.steps,
                        "first_seed": ep_seed,
                        "episodes": len(eps),
                        "transitions": n_steps,
                        "source": pack_index()[part.policy]["source"]
                        if part.policy != "random"
                        else "uniform random actions in [-1, 1]",
                    }
                )
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


def _single_threaded_blas() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - only slower
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _LogProgress:
    """Plain progress lines (every 5%) for logs, where a live bar would not render."""

    def __init__(self) -> None:
        self.total, self.shown, self.start, self.text = 1, -1, time.perf_counter(), ""

    def __enter__(self) -> "_LogProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, text: str, total: int) -> int:
        self.text, self.total = text, max(total, 1)
        return 0

    def update(self, task: int, completed: int) -> None:
        del task
        pct = int(20 * completed / self.total) * 5
        if pct > self.shown:
            self.shown = pct
            rate = completed / max(time.perf_counter() - self.start, 1e-9)
            print(f"{self.text}: {completed}/{self.total} ({pct}%), {rate:.0f} steps/s", flush=True)


def _progress_bar(progress: bool) -> Any:
    import sys

    if not progress:
        return _NoBar()
    if not sys.stderr.isatty():
        return _LogProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


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
    dataset unless ``overwrite``.
    """
    return build_dataset_report(
        name,
        steps=steps,
        overwrite=overwrite,
        seed=seed,
        progress=progress,
        n_envs=n_envs,
        workers=workers,
    ).dataset_id


def build_dataset_report(
    name: str,
    *,
    steps: int | None = None,
    overwrite: bool = False,
    seed: int | None = None,
    progress: bool = True,
    n_envs: int = DEFAULT_ENVS,
    workers: int | None = None,
) -> BuildReport:
    """`build_dataset`, returning the `BuildReport` (episodes, transitions, steps/s)."""
    parse_builtin(name)
    id_ = dataset_id(name)
    if is_local(id_) and not overwrite:
        raise FileExistsError(exists_message(id_))
    with build_lock(id_):
        return _build_locked(name, id_, steps, overwrite, seed, progress, n_envs, workers)


def _build_locked(
    name: str,
    id_: str,
    steps: int | None,
    overwrite: bool,
    seed: int | None,
    progress: bool,
    n_envs: int,
    workers: int | None,
) -> BuildReport:
    env, kind = parse_builtin(name)
    episodes, report = collect_episodes(
        name, steps=steps, seed=seed, n_envs=n_envs, workers=workers, progress=progress
    )
    env_id = recipes()[env]["env"]
    ref_min, ref_max = reference_scores(env)
    parts_txt = "; ".join(
        f"{p['policy']} ({'stochastic' if p['stochastic'] else 'deterministic'}, noise "
        f"{p['noise']}, {p['transitions']} transitions, {p['episodes']} episodes)"
        for p in report.parts
    )
    description = (
        f"D4RL-style {env}-{kind} on Gymnasium {env_id}, regenerated by ewfm from the "
        f"SB3-zoo policy pack: {parts_txt}."
    )
    meta = {
        "ewfm": {
            "name": name,
            "env_id": env_id,
            "kind": kind,
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
        description=description,
        extra_metadata=meta,
        overwrite=overwrite,
    )
    return report


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
