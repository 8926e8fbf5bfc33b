"""`ewfm train`: the offline-RL pipeline (Algorithm 2) and its baselines, resumable by stage.

Stages, each trained through `ewfm.make_epoch` (one jitted ``lax.scan`` per epoch) and
checkpointed atomically after every epoch:

1. ``behaviour``: state-conditioned field on (s, a) -- CFM on the OT path (QIPO-OT, BC) or
   denoising on the VP path (QIPO-Diff, QGPO). For ``bc`` this is the policy.
2. ``critic``: twin Q by in-support softmax Q-learning, supports for every next state
   pre-sampled once from the warmed-up behaviour EMA (`ewfm.rl.critic_loss`).
3. ``qipo``: every ``renew_every`` epochs, M supports for every state are re-drawn from the
   CURRENT EMA policy (optionally keeping the dataset action as one of them), scored once by
   the critic, then ``L_QFM`` / ``L_QD`` is minimised; the EMA is the policy.
   ``cep`` (QGPO instead): an energy network trained by contrastive energy prediction on
   behaviour supports; the policy is the behaviour model with energy-gradient guidance.

Evaluations run every ``eval_every`` epochs of the last stage and once at the end; the
run directory then holds ``config.json``, ``checkpoints/``, ``metrics.jsonl``,
``summary.json`` and ``curves.png``.
"""

import contextlib
import dataclasses
import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._experiment import atomic_path, write_text_atomic
from .._losses import cep_loss, cfm_loss, denoising_loss
from .._nets import EnergyNet, MLPField, ResidualMLPField
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import EnergyGuidedField
from .._train import TrainState, init_state, load_checkpoint, make_epoch, save_checkpoint
from ._config import ConfigError, TrainConfig, config_from_json, validate
from ._critic import (
    CriticBatch,
    ReturnBatch,
    critic_loss,
    discounted_returns,
    make_critic,
    q_values,
    return_loss,
    soft_target_optimizer,
)
from ._qipo import PolicySampler, SupportSet, draw_supports_jit, make_qipo_loss, scale_q


class StopTraining(Exception):
    """Raised by the test hook ``stop_after`` to simulate a kill right after a checkpoint."""


# -- small helpers --------------------------------------------------------------------------


def make_path(cfg: TrainConfig) -> AbstractPath:
    return OTPath() if cfg.path_kind == "ot" else VPPath()


def make_sampler(cfg: TrainConfig) -> PolicySampler:
    prediction = "velocity" if cfg.path_kind == "ot" else "eps"
    return PolicySampler(make_path(cfg), cfg.policy_solver, cfg.policy_steps, prediction, 1.0)


def make_field(cfg: TrainConfig, obs_dim: int, act_dim: int, key) -> Any:
    if cfg.net == "resnet":
        return ResidualMLPField(act_dim, cond_dim=obs_dim, key=key)
    return MLPField(act_dim, cond_dim=obs_dim, width=cfg.width, depth=cfg.depth, key=key)


def make_energy_net(cfg: TrainConfig, obs_dim: int, act_dim: int, key) -> EnergyNet:
    return EnergyNet(act_dim, cond_dim=obs_dim, width=cfg.width, depth=3, key=key)


class _Keys:
    """Named, fixed PRNG streams of one seed (so a resumed run draws the same numbers)."""

    def __init__(self, seed: int):
        names: tuple[str, ...] = (
            "subset",
            "behaviour",
            "critic_support",
            "critic",
            "cep",
            "qipo",
            "eval",
            "init",
        )
        self.k: dict[str, Any] = dict(zip(names, jr.split(jr.key(seed), len(names)), strict=True))

    def __getitem__(self, name: str):
        return self.k[name]


class _SeedKeys:
    """The `_Keys` streams of seeds ``seed .. seed + K - 1``, stacked on a leading seed axis.

    Seed ``j`` of a ``--seeds K`` run draws exactly the numbers a single run with
    ``--seed seed+j`` draws (data subsets excepted: all seeds share the first seed's subset).
    """

    def __init__(self, seed: int, count: int):
        self.keys = [_Keys(seed + j) for j in range(count)]

    def __getitem__(self, name: str):
        return jnp.stack([k[name] for k in self.keys])

    def first(self, name: str):
        return self.keys[0][name]


def _fold(keys, i: int):
    """``fold_in(key, i)`` for every seed's key."""
    return jax.vmap(lambda k: jr.fold_in(k, i))(keys)


def seed_slice(tree: Any, j: int) -> Any:
    """Seed ``j`` of a tree whose arrays carry a leading seed axis (other leaves kept)."""
    dyn, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree_util.tree_map(lambda x: x[j], dyn), static)


def seed_count(tree: Any) -> int:
    """Size of the leading seed axis of a stacked tree."""
    return int(jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))[0].shape[0])


def stacked_fields(cfg: TrainConfig, obs_dim: int, act_dim: int, keys) -> Any:
    """One policy field per seed key, stacked (``eqx.filter_vmap`` of `make_field`)."""
    return eqx.filter_vmap(lambda k: make_field(cfg, obs_dim, act_dim, k))(keys)


def stacked_energy_nets(cfg: TrainConfig, obs_dim: int, act_dim: int, keys) -> Any:
    return eqx.filter_vmap(lambda k: make_energy_net(cfg, obs_dim, act_dim, k))(keys)


def stacked_critic_states(cfg: TrainConfig, obs_dim: int, act_dim: int, keys, opt) -> Any:
    """A fresh critic `TrainState` per seed key, stacked (the critic stage's structure)."""
    return eqx.filter_vmap(
        lambda k: init_state(
            make_critic(obs_dim, act_dim, width=cfg.critic_width, depth=cfg.critic_depth, key=k),
            opt,
        )
    )(keys)


class Policy(eqx.Module):
    """``policy(obs [K * n, obs_dim], key) -> actions`` for `ewfm.rl.evaluate`, K seeds at once.

    ``field`` (and ``energy_net``, when not ``None``) carry a leading seed axis; rows
    ``j*n .. (j+1)*n - 1`` of the observations are acted on by seed ``j`` (all seeds in one
    jitted call per environment step). With an energy network the field is guided by its
    gradient (QGPO); without, it is sampled as is. A pytree: the evaluator jits it once and
    new weights do not recompile. Observations are normalised with the dataset statistics.
    """

    field: Any
    energy_net: Any
    sampler: PolicySampler
    mean: Any
    std: Any
    act_dim: int = eqx.field(static=True)
    guidance: float = eqx.field(static=True)

    def __call__(self, obs, key):
        s = (jnp.asarray(obs, jnp.float32) - self.mean) / self.std
        k = seed_count(self.field)
        s = s.reshape(k, -1, s.shape[-1])

        def one(field, energy_net, states, key):
            if energy_net is not None:
                field = EnergyGuidedField(
                    field, energy_net, self.sampler.path, self.guidance, "eps"
                )
            return self.sampler(field, states, key, self.act_dim)

        a = eqx.filter_vmap(one)(self.field, self.energy_net, s, jr.split(key, k))
        return a.reshape(-1, self.act_dim)


def make_policy(cfg: TrainConfig, field: Any, energy_net: Any, mean, std, act_dim: int) -> Policy:
    """The evaluation policy of stacked (per-seed) networks; ``energy_net=None``: unguided."""
    return Policy(
        field,
        energy_net,
        make_sampler(cfg),
        jnp.asarray(mean),
        jnp.asarray(std),
        act_dim,
        cfg.guidance,
    )


# -- the run directory ----------------------------------------------------------------------


class RunDir:
    """Files of one run; every write is atomic (temp file + rename)."""

    def __init__(self, out: str | Path):
        self.root = Path(out)
        self.ckpt = self.root / "checkpoints"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    def stage_path(self, stage: str) -> Path:
        return self.ckpt / f"{stage}.eqx"

    def trained_transitions(self) -> int | None:
        """Size of the dataset build this run was trained on (None before training)."""
        p = self.root / "obs_stats.json"
        return json.loads(p.read_text()).get("transitions") if p.exists() else None

    def write_json(self, name: str, obj: Any) -> None:
        write_text_atomic(self.root / name, json.dumps(obj, indent=2) + "\n")

    def write_metrics(self, history: list[dict]) -> None:
        write_text_atomic(
            self.root / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history)
        )


def _check_run(cfg: TrainConfig, run: RunDir, resume: bool) -> None:
    if run.config_path.exists():
        if not resume:
            raise ConfigError(
                f"{run.root} already holds a run; pass --resume to continue it or choose "
                "another --out."
            )
        old = config_from_json(run.config_path)
        for k, v in cfg.to_dict().items():
            if getattr(old, k) != v:
                raise ConfigError(
                    f"cannot resume {run.root} with {k}={v!r}: it was made with "
                    f"{k}={getattr(old, k)!r}; drop the option or choose another --out."
                )
    elif resume:
        raise ConfigError(f"{run.root} holds no config.json: nothing to resume; drop --resume.")
    elif run.root.exists() and any(run.root.iterdir()):
        raise ConfigError(f"{run.root} is not empty and not an ewfm run; choose another --out.")


# settings that decide the behaviour model, the critic's supports and the critic
_SHARED_STAGE_KEYS = (
    "dataset", "seed", "seeds", "subset", "steps_per_epoch", "net", "width", "depth", "lr",
    "batch_size", "ema_decay", "bc_epochs", "critic_mc_epochs", "critic_epochs",
    "critic_width", "critic_depth", "critic_lr", "critic_batch", "critic_support", "gamma",
    "tau", "beta_q", "solver", "sample_steps",
)  # fmt: skip
_SHARED_STAGES = ("behaviour", "critic_supports", "critic")


def _reuse_stages(cfg: TrainConfig, run: RunDir, source: str | Path, transitions: int) -> None:
    """Copy another run's behaviour and critic checkpoints into the new run ``run``.

    Allowed only when every setting those stages depend on is equal and both algorithms
    use the same path (QGPO and QIPO-Diff share a VP model; BC and QIPO-OT an OT one):
    the copies are then exactly what this run would train (keys depend only on seed,
    stage and epoch). Unfinished stages are copied as they are and resumed.
    """
    src = RunDir(source)
    if not src.config_path.exists():
        raise ConfigError(f"--reuse {src.root}: holds no config.json, not an ewfm run.")
    old = config_from_json(src.config_path)
    if old.path_kind != cfg.path_kind:
        raise ConfigError(
            f"--reuse {src.root}: its {old.algo} models are on the {old.path_kind.upper()} "
            f"path but {cfg.algo} needs the {cfg.path_kind.upper()} path; reuse a "
            f"{'qgpo or qipo-diff' if cfg.path_kind == 'vp' else 'bc or qipo-ot'} run."
        )
    for k in _SHARED_STAGE_KEYS:
        if getattr(old, k) != getattr(cfg, k):
            raise ConfigError(
                f"--reuse {src.root}: it was made with {k}={getattr(old, k)!r} but this run "
                f"has {k}={getattr(cfg, k)!r}; use the same setting or drop --reuse."
            )
    if src.trained_transitions() not in (None, transitions):
        raise ConfigError(
            f"--reuse {src.root}: trained on another build of {cfg.dataset}; drop --reuse."
        )
    if not src.stage_path("behaviour").exists():
        raise ConfigError(f"--reuse {src.root}: has no behaviour checkpoint yet.")
    for name in _SHARED_STAGES:
        if src.stage_path(name).exists():
            with atomic_path(run.stage_path(name)) as tmp:
                shutil.copyfile(src.stage_path(name), tmp)


# -- evaluation -----------------------------------------------------------------------------


def _evaluate(cfg, env_id, policy: Policy, episodes: int, key, seed: int) -> dict[str, Any]:
    """``episodes`` episodes for each of the policy's K seeds, all in one lock-step batch.

    Scores are pooled over episodes and seeds (``score_mean``/``score_std``); ``seed_scores``
    holds each seed's mean.
    """
    from . import evaluate  # the datasets issue's evaluator (gymnasium, lock-step envs)

    t0 = time.perf_counter()
    k = seed_count(policy.field)
    res = evaluate(
        policy, env_id, episodes * k, seed, key=key, max_episode_steps=cfg.eval_max_steps
    )
    scores = np.asarray(res.normalized, np.float64)
    return {
        "score_mean": float(res.normalized_mean),
        "score_std": float(res.normalized_std),
        "return_mean": float(res.mean),
        "episodes": int(res.episodes),
        "scores": [float(x) for x in scores],
        "seed_scores": [float(x) for x in scores.reshape(k, episodes).mean(axis=1)],
        "eval_seconds": time.perf_counter() - t0,
    }


# -- the pipeline ---------------------------------------------------------------------------


def _stage_loop(
    *,
    name: str,
    run: RunDir,
    state: TrainState,
    epoch_fn: Callable,
    epochs: int,
    keys,
    get_data: Callable[[int, TrainState], tuple[Any, dict]],
    history: list[dict],
    extra_tree: Callable[[], Any],
    evaluate_at: Callable[[int, TrainState], dict | None],
    progress: bool,
    stop_after: tuple[str, int] | None,
    start: int,
) -> TrainState:
    bar = _Bar(progress, name, epochs, start)
    steps = None
    try:
        for e in range(start, epochs):
            data, info = get_data(e, state)
            t0 = time.perf_counter()
            state, losses = epoch_fn(state, data, _fold(keys, e))
            losses = np.asarray(losses)  # [seeds, steps]
            dt = time.perf_counter() - t0
            steps = losses.shape[1]
            loss = float(losses.mean())
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{name}: the loss became {loss} in epoch {e + 1}; lower the learning rate."
                )
            m = {"stage": name, "epoch": e + 1, "loss": loss, "seconds": dt}
            m["steps_per_s"] = steps / dt  # per seed; K seeds run these steps side by side
            if losses.shape[0] > 1:
                m["seed_losses"] = [float(x) for x in losses.mean(axis=1)]
            m.update(info)
            ev = evaluate_at(e + 1, state)
            if ev is not None:
                m.update(ev)
            history.append(m)
            save_checkpoint(
                run.stage_path(name),
                (state, extra_tree()),
                {"epoch": e + 1, "history": history},
            )
            run.write_metrics(history)
            bar.advance(loss, m.get("score_mean"))
            if stop_after is not None and stop_after == (name, e + 1):
                raise StopTraining(f"stopped after {name} epoch {e + 1}")
    finally:
        bar.close()
    return state


class _Bar:
    def __init__(self, enabled: bool, name: str, total: int, start: int):
        self.bar = None
        if enabled and total > start:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(f"{name:>9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4g} {task.fields[score]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task(
                name, total=total, completed=start, loss=float("nan"), score=""
            )

    def advance(self, loss: float, score: float | None) -> None:
        if self.bar is not None:
            s = "" if score is None else f"score {score:.1f}"
            self.bar.update(self.task, advance=1, loss=loss, score=s)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _load_stage(run: RunDir, name: str, like: Any) -> tuple[Any | None, int, list | None]:
    p = run.stage_path(name)
    if not p.exists():
        return None, 0, None
    tree, meta = load_checkpoint(p, like)
    return tree, int(meta["epoch"]), list(meta["history"])


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: tuple[str, int] | None = None,
    reuse: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole pipeline for ``cfg`` into the directory ``out``.

    Returns the summary (also written to ``summary.json``). ``reuse=RUN`` starts the new
    run from RUN's behaviour and critic checkpoints (see `_reuse_stages`), e.g. QIPO-Diff
    on a QGPO run's diffusion model and critic. ``stop_after=(stage, epoch)`` raises
    `StopTraining` right after that epoch's checkpoint (a kill, for tests).
    """
    from . import ensure_dataset, env_id_for, load_transitions

    cfg = validate(cfg)
    run = RunDir(out)
    t_start = time.perf_counter()
    _check_run(cfg, run, resume)  # before any work: a bad resume must not build datasets
    if reuse is not None and resume:
        raise ConfigError("--reuse starts a new run; drop it when resuming.")
    ds_id = ensure_dataset(cfg.dataset, progress=progress)
    tr = load_transitions(ds_id)
    if reuse is not None:  # a fresh run (checked above): copy the stages before any config
        _reuse_stages(cfg, run, reuse, tr.size)  # checks everything before copying
    if not run.config_path.exists():
        run.write_json("config.json", cfg.to_dict())
    env_id = env_id_for(ds_id)
    log(f"dataset {ds_id}: {tr.size} transitions, env {env_id}")

    old_n = run.trained_transitions() if resume else None
    if old_n is not None and old_n != tr.size:
        raise ConfigError(
            f"{ds_id} now holds {tr.size} transitions but {run.root} was trained on "
            f"{old_n}: the dataset was rebuilt; start a new run (another --out)."
        )
    obs = np.asarray(tr.observations, np.float32)
    mean, std = obs.mean(0), obs.std(0) + 1e-3
    run.write_json(
        "obs_stats.json",
        {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "act_dim": int(tr.actions.shape[1]),
            "transitions": tr.size,
        },
    )
    norm = lambda x: jnp.asarray((np.asarray(x, np.float32) - mean) / std)
    s_all, a_all = norm(tr.observations), jnp.asarray(tr.actions, jnp.float32)
    obs_dim, act_dim = s_all.shape[1], a_all.shape[1]
    keys = _SeedKeys(cfg.seed, cfg.seeds)
    n_seeds = cfg.seeds
    n = tr.size
    if cfg.subset and cfg.subset < n:
        idx = np.sort(np.asarray(jr.choice(keys.first("subset"), n, (cfg.subset,), replace=False)))
    else:
        idx = np.arange(n)
    sampler = make_sampler(cfg)
    history: list[dict] = []
    stage_times: dict[str, float] = {}

    def run_eval(field, energy_net, episodes: int, tag: int) -> dict:
        # the key and env seed depend only on (seed, tag): a resumed run evaluates the same
        k = jr.fold_in(keys.first("eval"), tag)
        pol = make_policy(cfg, field, energy_net, mean, std, act_dim)
        return _evaluate(cfg, env_id, pol, episodes, k, cfg.seed * 100_000 + tag)

    last_stage = {"bc": "behaviour", "qgpo": "cep"}.get(cfg.algo, "qipo")

    def periodic_eval(stage: str, to_policy: Callable[[TrainState], tuple[Any, Any]]):
        def at(epoch: int, state: TrainState) -> dict | None:
            if stage != last_stage or not cfg.eval_every or not cfg.eval_episodes:
                return None
            if epoch % cfg.eval_every or epoch == _stage_epochs(cfg, stage):
                return None
            field, energy_net = to_policy(state)
            save_checkpoint(
                run.ckpt / f"eval_{stage}_{epoch:04d}.eqx", (field, energy_net), {"epoch": epoch}
            )
            return run_eval(field, energy_net, cfg.eval_episodes, epoch)

        return at

    def per_seed(fn: Callable[[int], Any]) -> Any:
        """``fn(j)`` for every seed, stacked (support draws: one compiled program reused)."""
        outs = [fn(j) for j in range(n_seeds)]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)

    # 1. behaviour warm-up ------------------------------------------------------------------
    opt, bc_epoch = _stage_fns("behaviour", _program_key(cfg))
    fields0 = stacked_fields(cfg, obs_dim, act_dim, _fold(keys["init"], 0))
    beh = eqx.filter_vmap(lambda f: init_state(f, opt))(fields0)
    loaded, start, hist = _load_stage(run, "behaviour", (beh, None))
    if loaded is not None:
        beh, history = loaded[0], hist or []
    t0 = time.perf_counter()
    beh = _stage_loop(
        name="behaviour",
        run=run,
        state=beh,
        epoch_fn=bc_epoch,
        epochs=cfg.bc_epochs,
        keys=keys["behaviour"],
        get_data=lambda e, st: ((s_all, a_all), {}),
        history=history,
        extra_tree=lambda: None,
        evaluate_at=periodic_eval("behaviour", lambda st: (st.ema, None)),
        progress=progress,
        stop_after=stop_after,
        start=start,
    )
    stage_times["behaviour"] = time.perf_counter() - t0

    def behaviour_supports(states, stream_keys, m: int):
        """``m`` actions per state from each seed's behaviour EMA (its own key)."""
        return per_seed(
            lambda j: draw_supports_jit(
                seed_slice(beh.ema, j), sampler, states, stream_keys[j], m=m, action_dim=act_dim
            )
        )

    energy_net = None
    policy = beh.ema
    if cfg.algo != "bc":
        # 2. critic ---------------------------------------------------------------------------
        t0 = time.perf_counter()
        sub = lambda x: jnp.asarray(np.asarray(x, np.float32)[idx])
        s_sub, a_sub = s_all[idx], a_all[idx]
        ns_sub = norm(np.asarray(tr.next_observations)[idx])
        sup_like = jnp.zeros((n_seeds, len(idx), cfg.critic_support, act_dim), jnp.float32)
        sup_path = run.ckpt / "critic_supports.eqx"
        if sup_path.exists():
            next_sup, _ = load_checkpoint(sup_path, sup_like)
        else:
            ts = time.perf_counter()
            next_sup = behaviour_supports(ns_sub, keys["critic_support"], cfg.critic_support)
            next_sup = jax.block_until_ready(next_sup)
            save_checkpoint(sup_path, next_sup, {"seconds": time.perf_counter() - ts})
            log(f"critic supports: {next_sup.shape} in {time.perf_counter() - ts:.0f} s")
        cbatch = CriticBatch(s_sub, a_sub, sub(tr.rewards), ns_sub, sub(tr.terminals), next_sup)
        returns = discounted_returns(tr.rewards, tr.terminals, tr.timeouts, cfg.gamma)
        rbatch = ReturnBatch(s_sub, a_sub, jnp.asarray(returns[idx], jnp.float32))
        copt, td_epoch = _stage_fns("critic", _program_key(cfg))
        _, mc_epoch = _stage_fns("critic_mc", _program_key(cfg))
        critic_epoch = lambda st, d, k: (mc_epoch if isinstance(d, ReturnBatch) else td_epoch)(
            st, d, k
        )
        cst = stacked_critic_states(cfg, obs_dim, act_dim, _fold(keys["init"], 1), copt)
        loaded, start, hist = _load_stage(run, "critic", (cst, None))
        if loaded is not None:
            cst, history = loaded[0], hist or history
        cst = _stage_loop(
            name="critic",
            run=run,
            state=cst,
            epoch_fn=critic_epoch,
            epochs=cfg.critic_mc_epochs + cfg.critic_epochs,
            keys=keys["critic"],
            get_data=lambda e, st: (
                (rbatch, {"phase": "returns"})
                if e < cfg.critic_mc_epochs
                else (cbatch, {"phase": "td"})
            ),
            history=history,
            extra_tree=lambda: None,
            evaluate_at=lambda e, st: None,
            progress=progress,
            stop_after=stop_after,
            start=start,
        )
        qnet = cst.model.q
        stage_times["critic"] = time.perf_counter() - t0
        score_q = _score_q
        # the states that carry support sets (QIPO renewals, CEP): a random part of the subset
        if cfg.qipo_subset and cfg.qipo_subset < len(idx):
            rows = jr.choice(
                jr.fold_in(keys.first("subset"), 1), len(idx), (cfg.qipo_subset,), replace=False
            )
            rows = np.sort(np.asarray(rows))
        else:
            rows = np.arange(len(idx))
        s_q, a_q = s_sub[rows], a_sub[rows]

        if cfg.algo == "qgpo":
            # 3'. CEP energy network on behaviour supports ----------------------------------
            t0 = time.perf_counter()
            sp = run.ckpt / "cep_supports.eqx"
            like = jnp.zeros((n_seeds, len(rows), cfg.support, act_dim), jnp.float32)
            if sp.exists():
                sup, _ = load_checkpoint(sp, like)
            else:
                sup = behaviour_supports(s_q, _fold(keys["cep"], 1), cfg.support)
                save_checkpoint(sp, sup, {})
            sq = per_seed(lambda j: _chunked_q(score_q, seed_slice(qnet, j), s_q, sup[j]))
            sset = SupportSet(s_q, sup, sq)
            eopt, cep_epoch = _stage_fns("cep", _program_key(cfg))
            est = eqx.filter_vmap(lambda e: init_state(e, eopt))(
                stacked_energy_nets(cfg, obs_dim, act_dim, _fold(keys["init"], 2))
            )
            loaded, start, hist = _load_stage(run, "cep", (est, None))
            if loaded is not None:
                est, history = loaded[0], hist or history
            beh_field = beh.ema
            est = _stage_loop(
                name="cep",
                run=run,
                state=est,
                epoch_fn=cep_epoch,
                epochs=cfg.cep_epochs,
                keys=keys["cep"],
                get_data=lambda e, st: (sset, {}),
                history=history,
                extra_tree=lambda: None,
                evaluate_at=periodic_eval("cep", lambda st: (beh_field, st.ema)),
                progress=progress,
                stop_after=stop_after,
                start=start,
            )
            energy_net = est.ema
            stage_times["cep"] = time.perf_counter() - t0
        else:
            # 3. QIPO iterations -----------------------------------------------------------
            t0 = time.perf_counter()
            qopt, qipo_epoch = _stage_fns("qipo", _program_key(cfg))
            qst = eqx.filter_vmap(lambda m: init_state(m, qopt))(beh.ema)
            set_like = SupportSet(
                s_q,
                jnp.zeros((n_seeds, len(rows), cfg.support, act_dim), jnp.float32),
                jnp.zeros((n_seeds, len(rows), cfg.support), jnp.float32),
            )
            loaded, start, hist = _load_stage(run, "qipo", (qst, set_like))
            current: dict[str, Any] = {"set": None, "train": None}

            def use(raw: SupportSet) -> None:  # trained on: the same set, Q scaled by q_norm
                current["set"] = raw
                current["train"] = raw._replace(q=scale_q(raw.q, cfg.q_norm))

            if loaded is not None:
                qst, history = loaded[0], hist or history
                use(loaded[1])
            keep = a_q if cfg.keep_data_action else None
            qipo_keys = keys["qipo"]

            def get_data(e: int, st: TrainState):
                info: dict[str, Any] = {}
                if e % cfg.renew_every == 0 or current["set"] is None:
                    ts = time.perf_counter()
                    sets = per_seed(
                        lambda j: renew_supports(
                            seed_slice(st, j),
                            sampler,
                            score_q,
                            seed_slice(qnet, j),
                            s_q,
                            jr.fold_in(qipo_keys[j], 10_000 + e),
                            m=cfg.support,
                            action_dim=act_dim,
                            data_actions=keep,
                        )
                    )
                    raw = SupportSet(s_q, sets.actions, sets.q)
                    use(raw)
                    info.update(_support_stats(raw, current["train"].q, cfg.beta))
                    info["renew_seconds"] = time.perf_counter() - ts
                return current["train"], info

            qst = _stage_loop(
                name="qipo",
                run=run,
                state=qst,
                epoch_fn=qipo_epoch,
                epochs=cfg.qipo_epochs,
                keys=qipo_keys,
                get_data=get_data,
                history=history,
                extra_tree=lambda: current["set"],
                evaluate_at=periodic_eval("qipo", lambda st: (st.ema, None)),
                progress=progress,
                stop_after=stop_after,
                start=start,
            )
            policy = qst.ema
            stage_times["qipo"] = time.perf_counter() - t0

    # 4. final policy and evaluation -----------------------------------------------------------
    save_checkpoint(
        run.ckpt / "policy.eqx", (policy, energy_net), {"algo": cfg.algo, "seeds": n_seeds}
    )
    t0 = time.perf_counter()
    ev = run_eval(policy, energy_net, cfg.final_episodes, 99_999)
    if cfg.eval_behaviour and cfg.algo != "bc":
        bev = run_eval(beh.ema, None, cfg.final_episodes, 99_998)
        extra = {
            "behaviour_score_mean": bev["score_mean"],
            "behaviour_score_std": bev["score_std"],
            "behaviour_seed_scores": bev["seed_scores"],
        }
    else:
        extra = {}
    summary = {
        "algo": cfg.algo,
        "dataset": ds_id,
        "env": env_id,
        "seed": cfg.seed,
        "seeds": n_seeds,
        "score_mean": ev["score_mean"],
        "score_std": ev["score_std"],
        "seed_scores": ev["seed_scores"],
        "return_mean": ev["return_mean"],
        "episodes": ev["episodes"],
        "scores": ev["scores"],
        **extra,
        "final_eval_seconds": time.perf_counter() - t0,
        "stage_seconds_this_session": stage_times,
        "wall_seconds_this_session": time.perf_counter() - t_start,
        "steps_per_s": _steps_per_s(history),
    }
    run.write_json("summary.json", summary)
    with contextlib.suppress(ImportError):  # matplotlib is optional
        plot_curves(history, run.root / "curves.png", summary)
    return summary


_score_q = eqx.filter_jit(q_values)


def _program_key(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without the settings that do not change a stage's program (better caching)."""
    return dataclasses.replace(cfg, seed=0, seeds=1, dataset="", eval_every=0, final_episodes=1)


@functools.lru_cache(maxsize=32)
def _stage_fns(stage: str, cfg: TrainConfig) -> tuple[Any, Callable]:
    """The optimiser and the jitted epoch of a stage, vmapped over seeds, cached per config.

    The epoch takes states and keys with a leading seed axis; the data is shared by all
    seeds except the per-seed support actions (and their Q-values) of the later stages.
    """
    path = make_path(cfg)
    ema = cfg.ema_decay
    if stage == "behaviour":
        opt, batch = optax.adam(cfg.lr), cfg.batch_size
        if cfg.path_kind == "ot":
            loss = lambda m, b, k: cfm_loss(m, path, b[1], k, cond=b[0])
        else:
            loss = lambda m, b, k: denoising_loss(m, path, b[1], k, cond=b[0])
    elif stage in ("critic", "critic_mc"):
        opt, batch, ema = (
            soft_target_optimizer(optax.adam(cfg.critic_lr), cfg.tau),
            cfg.critic_batch,
            0.0,
        )
        if stage == "critic":
            loss = lambda m, b, k: critic_loss(m, b, k, gamma=cfg.gamma, beta_q=cfg.beta_q)
        else:
            loss = return_loss
    elif stage == "cep":
        opt, batch = optax.adam(cfg.lr), cfg.qipo_states
        loss = lambda m, b, k: cep_loss(m, path, b.actions, -b.q, cfg.cep_beta, k, cond=b.states)
    else:
        opt, batch = optax.adam(cfg.qipo_lr), cfg.qipo_states
        loss = make_qipo_loss(path, cfg.beta, "velocity" if cfg.path_kind == "ot" else "eps")
    epoch = make_epoch(loss, opt, batch_size=batch, steps=cfg.steps_per_epoch, ema_decay=ema)
    data_axes: Any = {
        "behaviour": None,
        "critic": CriticBatch(None, None, None, None, None, 0),  # pyright: ignore[reportArgumentType]
        "critic_mc": None,
        "cep": SupportSet(None, 0, 0),  # pyright: ignore[reportArgumentType]
        "qipo": SupportSet(None, 0, 0),  # pyright: ignore[reportArgumentType]
    }[stage]
    vepoch = eqx.filter_vmap(epoch, in_axes=(eqx.if_array(0), data_axes, 0))
    return opt, eqx.filter_jit(vepoch)


def _stage_epochs(cfg: TrainConfig, stage: str) -> int:
    return {
        "behaviour": cfg.bc_epochs,
        "critic": cfg.critic_mc_epochs + cfg.critic_epochs,
        "cep": cfg.cep_epochs,
        "qipo": cfg.qipo_epochs,
    }[stage]


def _chunked_q(score_q, qnet, states, actions, chunk: int = 8192):
    out = [
        score_q(qnet, states[i : i + chunk], actions[i : i + chunk])
        for i in range(0, states.shape[0], chunk)
    ]
    return jnp.concatenate(out)


def renew_supports(
    state: TrainState,
    sampler: PolicySampler,
    score_q: Callable,
    qnet: Any,
    states,
    key,
    *,
    m: int,
    action_dim: int,
    data_actions=None,
) -> SupportSet:
    """Algorithm 2, line 10: M supports per state from the CURRENT policy ``state.ema``.

    Q-values come from the fixed critic ``qnet``; with ``data_actions`` the dataset action
    is kept as the first support of each state.
    """
    sup = draw_supports_jit(
        state.ema, sampler, states, key, m=m, action_dim=action_dim, data_actions=data_actions
    )
    return SupportSet(states, sup, _chunked_q(score_q, qnet, states, sup))


def _support_stats(s: SupportSet, q_w: jax.Array, beta: float) -> dict[str, float]:
    """Q and weight statistics of support sets ``[..., states, M]`` (seeds pooled); the
    weights are ``M softmax(beta q_w)`` with ``q_w`` the Q rescaled by ``cfg.q_norm``."""
    q = np.asarray(s.q).reshape(-1, s.q.shape[-1])
    w = np.asarray(jax.nn.softmax(beta * np.asarray(q_w).reshape(q.shape), axis=-1)) * q.shape[-1]
    return {
        "q_mean": float(q.mean()),
        "q_std_within": float(q.std(axis=-1).mean()),
        "w_max_mean": float(w.max(axis=-1).mean()),
        "w_data_mean": float(w[:, 0].mean()),
    }


def _steps_per_s(history: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for stage in ("behaviour", "critic", "cep", "qipo"):
        vals = [m["steps_per_s"] for m in history if m["stage"] == stage]
        if vals:
            out[stage] = float(np.median(vals))
    return out


def plot_curves(history: list[dict], path: Path, summary: dict | None = None) -> None:
    """Losses per stage, support Q statistics and normalised score, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [
        s for s in ("behaviour", "critic", "cep", "qipo") if any(m["stage"] == s for m in history)
    ]
    fig, axes = plt.subplots(1, len(stages) + 2, figsize=(4 * (len(stages) + 2), 3.2))
    for ax, s in zip(axes, stages, strict=False):
        ms = [m for m in history if m["stage"] == s]
        ax.plot([m["epoch"] for m in ms], [m["loss"] for m in ms])
        ax.set_title(f"{s} loss")
        ax.set_xlabel("epoch")
        if s == "critic":
            ax.set_yscale("log")
    qm = [m for m in history if "q_mean" in m]
    ax = axes[len(stages)]
    if qm:
        ax.plot([m["epoch"] for m in qm], [m["q_mean"] for m in qm], "o-", label="mean Q")
        ax2 = ax.twinx()
        ax2.plot(
            [m["epoch"] for m in qm],
            [m["q_std_within"] for m in qm],
            "s--",
            color="C1",
            label="Q std within state",
        )
        ax.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_title("support Q at renewals")
    ax = axes[len(stages) + 1]
    ev = [m for m in history if "score_mean" in m]
    xs = [f"{m['stage'][:4]}{m['epoch']}" for m in ev]
    ys = [m["score_mean"] for m in ev]
    if summary is not None:
        xs.append("final")
        ys.append(summary["score_mean"])
    ax.plot(range(len(ys)), ys, "o-")
    ax.set_xticks(range(len(ys)), xs, rotation=45, fontsize=7)
    ax.set_title("normalised score")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def evaluate_run(
    out: str | Path,
    *,
    episodes: int | None = None,
    seed: int = 12345,
    checkpoint: str | None = None,
    guidance: float | None = None,
) -> dict[str, Any]:
    """Re-evaluate the final policy (or an ``eval_*.eqx`` checkpoint) of a finished run.

    ``guidance`` overrides QGPO's energy-gradient scale (a sampling-time knob that QGPO
    tunes per task without retraining); other algorithms have no guidance and refuse it.
    """
    from . import env_id_for

    run = RunDir(out)
    if not run.config_path.exists():
        raise ConfigError(f"{run.root} holds no config.json: not an ewfm run directory.")
    cfg = config_from_json(run.config_path)
    if guidance is not None:
        if cfg.algo != "qgpo":
            raise ConfigError(
                f"--guidance applies to qgpo runs only; {run.root} is a {cfg.algo} run."
            )
        if not guidance >= 0:
            raise ConfigError(f"guidance must be >= 0, got {guidance}.")
        cfg = dataclasses.replace(cfg, guidance=float(guidance))
    stats = json.loads((run.root / "obs_stats.json").read_text())
    mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    obs_dim = mean.shape[0]
    act_dim = int(stats["act_dim"])
    ks = jr.split(jr.key(0), cfg.seeds)
    field_like = stacked_fields(cfg, obs_dim, act_dim, ks)
    energy_like = stacked_energy_nets(cfg, obs_dim, act_dim, ks) if cfg.algo == "qgpo" else None
    p = run.ckpt / (checkpoint or "policy.eqx")
    if not p.exists():
        if checkpoint is None:
            raise ConfigError(f"{run.root} has no final policy yet; finish it with --resume.")
        raise ConfigError(f"no checkpoint {p}; see {run.ckpt} for the saved ones.")
    try:
        (field, energy_net), _ = load_checkpoint(p, (field_like, energy_like))
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"{p} does not match this run's networks ({e}); it was written by another "
            "version of ewfm: re-train the run."
        ) from None
    pol = make_policy(cfg, field, energy_net, mean, std, act_dim)
    env_id = env_id_for(cfg.dataset)
    ev = _evaluate(cfg, env_id, pol, episodes or cfg.final_episodes, jr.key(seed), seed)
    ev["checkpoint"] = str(p)
    ev["guidance"] = cfg.guidance if cfg.algo == "qgpo" else None
    return ev
