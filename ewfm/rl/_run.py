"""`ewfm train`: a short list of stages per method, run on a `RunDir`; `load_run` and
`evaluate_run` read a run back.

A run directory holds ``config.json``, ``obs_stats.json`` (with the id of the dataset it
trains on, so that a resumed run keeps its data), ``checkpoints/`` (one per stage,
rewritten after every epoch; ``policy.eqx`` at the end), ``metrics.jsonl``,
``summary.json`` and ``curves.png``. Every stage resumes from its checkpoint: keys depend
only on the seed, the stage and the epoch, so a resumed run equals an uninterrupted one.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.random as jr
import numpy as np

from .._experiment import (
    ConfigError,
    Progress,
    RunDir,
    atomic_path,
    check_choice,
    config_to_json,
)
from .._nets import TwinQ
from .._sample import Sampler
from .._train import TrainState, load_checkpoint, save_checkpoint
from ._config import TrainConfig, read_config
from ._context import Context, Data, Dims, SeedKeys, dims_of
from ._plot import plot_curves
from ._policy import (
    Policy,
    evaluate_policy,
    make_policy,
    policy_sampler,
    stacked_energy_nets,
    stacked_fields,
)
from ._qipo import SupportSet
from ._stages import CRITIC_STAGES, STAGES, Behaviour, method_stages, run_stage, stage_class

# settings that decide the behaviour model, the critic's supports and the critic
_SHARED_STAGE_KEYS = (
    "dataset", "seed", "seeds", "subset", "steps_per_epoch", "net", "width", "depth", "lr",
    "batch_size", "ema_decay", "bc_epochs", "critic", "critic_mc_epochs", "critic_epochs",
    "critic_width", "critic_depth", "critic_lr", "critic_batch", "critic_support", "gamma",
    "tau", "beta_q", "solver", "sample_steps", "reward_scale", "critic_warm_start",
    "critic_layer_norm", "expectile",
)  # fmt: skip


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: tuple[str, int] | None = None,
    reuse: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train (or resume) ``cfg``'s method into the run directory ``out``; return the summary
    (also written to ``summary.json``).

    ``reuse=RUN`` starts the new run from RUN's behaviour and critic checkpoints (same
    settings and path, checked), e.g. QIPO-Diff on a QGPO run's diffusion model and critic.
    ``stop_after=(stage, epoch)`` raises `StopTraining` right after that epoch's checkpoint
    (a kill, for tests).
    """
    from . import ensure_dataset, env_id_for, load_transitions

    run, t_start = RunDir(out), time.perf_counter()
    _check_run(cfg, run, resume)  # before any work: a bad resume must not build datasets
    if reuse is not None and resume:
        raise ConfigError("--reuse starts a new run; drop it when resuming.")
    ds_id = ensure_dataset(_run_dataset(cfg, run) if resume else cfg.dataset, progress=progress)
    tr = load_transitions(ds_id)
    if reuse is not None:  # a fresh run (checked above): copy the stages before any config
        _reuse_stages(cfg, run, reuse, tr.size, ds_id)  # checks everything before copying
    if not run.is_run():
        run.write_json("config.json", config_to_json(cfg))
    env_id = env_id_for(ds_id)
    log(f"dataset {ds_id}: {tr.size} transitions, env {env_id}")
    old_n = _trained_transitions(run) if resume else None
    if old_n is not None and old_n != tr.size:
        raise ConfigError(
            f"{ds_id} now holds {tr.size} transitions but {run.root} was trained on "
            f"{old_n}: the dataset was rebuilt; start a new run (another --out)."
        )
    keys = SeedKeys(cfg.seed, cfg.seeds)
    data = Data.load(tr, cfg, keys)
    run.write_json("obs_stats.json", {**data.stats(), "dataset_id": ds_id})
    stages = method_stages(cfg)
    with Progress(progress, log_lines=True) as bars:
        ctx = Context(cfg, run, data, keys, env_id, bars, log, stages[-1].name, stop_after)
        for stage in stages:
            run_stage(stage(ctx))
    return _finish(ctx, ds_id, t_start)


def _finish(ctx: Context, ds_id: str, t_start: float) -> dict[str, Any]:
    """Save the final policy, score it (and the behaviour model), write the summary."""
    cfg, run = ctx.cfg, ctx.run
    field, energy_net = ctx.policy
    meta = {"algo": cfg.method, "seeds": cfg.seeds}
    save_checkpoint(run.ckpt / "policy.eqx", (field, energy_net), meta)
    t0 = time.perf_counter()
    ev = ctx.evaluate(field, energy_net, cfg.final_episodes, 99_999)
    extra = {}
    if cfg.eval_behaviour and cfg.method != "bc":
        assert ctx.behaviour is not None
        bev = ctx.evaluate(ctx.behaviour.ema, None, cfg.final_episodes, 99_998)
        extra = {
            "behaviour_score_mean": bev["score_mean"],
            "behaviour_score_std": bev["score_std"],
            "behaviour_seed_scores": bev["seed_scores"],
        }
    summary = {
        "method": cfg.method,
        "algo": cfg.method,  # the name older readers look for
        "dataset": ds_id,
        "env": ctx.env_id,
        "seed": cfg.seed,
        "seeds": cfg.seeds,
        **{k: ev[k] for k in ("score_mean", "score_std", "seed_scores", "return_mean")},
        **{k: ev[k] for k in ("episodes", "scores")},
        **extra,
        "final_eval_seconds": time.perf_counter() - t0,
        "stage_seconds_this_session": ctx.seconds,
        "wall_seconds_this_session": time.perf_counter() - t_start,
        "steps_per_s": _steps_per_s(ctx.history),
    }
    run.write_json("summary.json", summary)
    with contextlib.suppress(ImportError):  # matplotlib is optional
        plot_curves(ctx.history, run.root / "curves.png", summary)
    return summary


def _steps_per_s(history: list[dict[str, Any]]) -> dict[str, float]:
    """Median optimiser steps per second of each stage."""
    out: dict[str, float] = {}
    for stage in dict.fromkeys(m["stage"] for m in history):
        out[stage] = float(np.median([m["steps_per_s"] for m in history if m["stage"] == stage]))
    return out


# -- new, resumed and reused run directories ----------------------------------------------------


def _read_json_config(path: Path) -> dict[str, Any]:
    return config_to_json(read_config(path))


def _check_run(cfg: TrainConfig, run: RunDir, resume: bool) -> None:
    run.check(config_to_json(cfg), resume=resume, read=_read_json_config)


def _trained_transitions(run: RunDir) -> int | None:
    """Size of the dataset build the run was trained on (None before training)."""
    p = run / "obs_stats.json"
    return run.read_json("obs_stats.json").get("transitions") if p.exists() else None


def _run_dataset(cfg: TrainConfig, run: RunDir) -> str:
    """The dataset a resumed run trains on: the id it recorded (`recorded_dataset_id`), so
    it keeps its data when a built-in name has since moved to a new recipe version; its
    configured name when it never started training."""
    from ._data import recorded_dataset_id

    if not (run / "obs_stats.json").exists():
        return cfg.dataset
    return recorded_dataset_id(cfg.dataset, run.read_json("obs_stats.json").get("dataset_id"))


def _reuse_stages(
    cfg: TrainConfig, run: RunDir, source: str | os.PathLike, n: int, ds_id: str
) -> None:
    """Copy another run's behaviour and critic checkpoints into the new run ``run``.

    Allowed only when every setting those stages depend on is equal and both methods use
    the same path (QGPO and QIPO-Diff share a VP model; BC and QIPO-OT an OT one): the
    copies are then exactly what this run would train (keys depend only on seed, stage and
    epoch). Unfinished stages are copied as they are and resumed.
    """
    src = RunDir(source)
    if not src.is_run():
        raise ConfigError(f"--reuse {src.root}: holds no config.json, not an ewfm run.")
    old = read_config(src.config_path)
    if old.path_kind != cfg.path_kind:
        raise ConfigError(
            f"--reuse {src.root}: its {old.method} models are on the {old.path_kind.upper()} "
            f"path but {cfg.method} needs the {cfg.path_kind.upper()} path; reuse a "
            f"{'qgpo or qipo-diff' if cfg.path_kind == 'vp' else 'bc or qipo-ot'} run."
        )
    for k in _SHARED_STAGE_KEYS:
        if getattr(old, k) != getattr(cfg, k):
            raise ConfigError(
                f"--reuse {src.root}: it was made with {k}={getattr(old, k)!r} but this run "
                f"has {k}={getattr(cfg, k)!r}; use the same setting or drop --reuse."
            )
    if _trained_transitions(src) not in (None, n):
        raise ConfigError(
            f"--reuse {src.root}: trained on another build of {cfg.dataset}; drop --reuse."
        )
    if (src / "obs_stats.json").exists() and _run_dataset(old, src) != ds_id:
        raise ConfigError(
            f"--reuse {src.root}: trained on {_run_dataset(old, src)} but this run uses "
            f"{ds_id}; pass --dataset {_run_dataset(old, src)} or drop --reuse."
        )
    if not src.stage_path("behaviour").exists():
        raise ConfigError(f"--reuse {src.root}: has no behaviour checkpoint yet.")
    for stage in (Behaviour, CRITIC_STAGES[cfg.critic]):
        for name in (stage.name, *stage.files):
            if src.stage_path(name).exists():
                with atomic_path(run.stage_path(name)) as tmp:
                    shutil.copyfile(src.stage_path(name), tmp)


EXTRACT_MODELS: dict[str, str] = {
    "policy": "the run's final policy (or --checkpoint)",
    "behaviour": "its behaviour model (the BC warm-up; a bc run's policy)",
}
"""What `evaluate_run` can score (its ``model`` argument)."""


# -- reading a run back -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run read back from its directory (`load_run`): its config, the dataset's
    observation statistics, and its checkpoints in the structure they were written in.

    Every network carries a leading seed axis (``config.seeds``); `ewfm.rl.seed_slice`
    takes one seed.
    """

    root: Path
    config: TrainConfig
    mean: np.ndarray
    std: np.ndarray
    act_dim: int
    transitions: int | None  # size of the dataset build it was trained on
    dataset_id: str = ""  # the dataset it was trained on (`recorded_dataset_id`)

    @property
    def obs_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dims(self) -> Dims:
        if self.transitions is None:
            raise ConfigError(
                f"{self.root}/obs_stats.json does not say how many transitions the run was "
                "trained on (an older run): its stage checkpoints cannot be read back."
            )
        return dims_of(self.config, self.obs_dim, self.act_dim, self.transitions)

    @property
    def sampler(self) -> Sampler:
        """How the run's policy (and its support renewals) draw actions."""
        return policy_sampler(self.config)

    def stage_path(self, name: str) -> Path:
        """The checkpoint file of a stage (``behaviour``, ``critic``, ``cep``, ``qipo``) or
        any other checkpoint name (``policy``, ``critic_supports``, ``eval_qipo_0002``)."""
        return RunDir(self.root).stage_path(name)

    def load(self, stage: str) -> tuple[TrainState, Any, dict[str, Any]]:
        """A stage's checkpoint: its stacked `TrainState`, what it keeps beside (QIPO: the
        current `SupportSet`; else None) and its metadata (``epoch``, ``history``)."""
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}.")
        path = self.stage_path(stage)
        if not path.is_file():
            raise ConfigError(f"{self.root} has no {stage} checkpoint ({path}).")
        like = stage_class(stage, self.config).like(self.config, self.dims)
        (state, extra), meta = load_checkpoint(path, like)
        return state, extra, meta

    def behaviour(self) -> Any:
        """The behaviour model (its EMA, the network that is sampled), stacked over seeds."""
        return self.load("behaviour")[0].ema

    def q_net(self) -> TwinQ:
        """The critic's online twin Q networks, stacked over seeds."""
        critic = CRITIC_STAGES[self.config.critic]
        return critic.q_of(self.load(critic.name)[0])

    def support_set(self) -> SupportSet:
        """The support set of QIPO's last epoch (Q as the critic gave it)."""
        return self.load("qipo")[1]

    def networks(self, checkpoint: str | None = None) -> tuple[Any, Any]:
        """(policy field, energy net or None) of ``policy.eqx`` or of ``checkpoint`` (an
        ``eval_*.eqx`` file name in ``checkpoints/``)."""
        cfg, root = self.config, self.root
        p = root / "checkpoints" / (checkpoint or "policy.eqx")
        if not p.exists():
            if checkpoint is None:
                raise ConfigError(f"{root} has no final policy yet; finish it with --resume.")
            raise ConfigError(f"no checkpoint {p}; see {p.parent} for the saved ones.")
        ks = jr.split(jr.key(0), cfg.seeds)
        field_like = stacked_fields(cfg, self.obs_dim, self.act_dim, ks)
        qgpo = cfg.method == "qgpo"
        energy_like = stacked_energy_nets(cfg, self.obs_dim, self.act_dim, ks) if qgpo else None
        try:
            return load_checkpoint(p, (field_like, energy_like))[0]
        except (ValueError, RuntimeError) as e:
            raise ConfigError(
                f"{p} does not match the networks of {root}/config.json ({e}); it was "
                "written with other network settings or by another version of ewfm: "
                "restore the run's own config.json, or re-train the run."
            ) from None

    def policy(
        self,
        checkpoint: str | None = None,
        *,
        guidance: float | None = None,
        model: str = "policy",
        best_of: int = 1,
        deterministic: bool = False,
    ) -> Policy:
        """The policy of ``policy.eqx`` (or ``checkpoint``) for `ewfm.rl.evaluate`.

        ``guidance`` overrides QGPO's energy-gradient scale (a sampling-time knob that QGPO
        tunes per task without retraining); other methods have no guidance and refuse it.
        ``model="behaviour"`` acts with the behaviour model (the BC warm-up) instead.
        ``best_of = N`` acts with the highest-Q of N draws by the run's critic;
        ``deterministic`` integrates from ``x1 = 0`` (see `Policy`).
        """
        cfg = self.config
        check_choice(model, EXTRACT_MODELS, "model")
        if guidance is not None:
            if cfg.method != "qgpo":
                raise ConfigError(
                    f"--guidance applies to qgpo runs only; {self.root} is a {cfg.method} run."
                )
            if not guidance >= 0:
                raise ConfigError(f"guidance must be >= 0, got {guidance}.")
            cfg = dataclasses.replace(cfg, guidance=float(guidance))
        if best_of < 1:
            raise ConfigError(f"best_of must be >= 1, got {best_of}.")
        if best_of > 1 and deterministic:
            raise ConfigError("best-of-N needs random draws; drop --deterministic or --best-of.")
        if best_of > 1 and cfg.method == "bc":
            raise ConfigError(
                f"best-of-N ranks actions by Q and {self.root} is a bc run (no critic); use a "
                "qipo or qgpo run with --model behaviour for BC + best-of-N."
            )
        if model == "behaviour":
            if checkpoint is not None:
                raise ConfigError(
                    "--checkpoint picks a policy checkpoint; drop it with --model behaviour."
                )
            if guidance is not None:
                raise ConfigError(
                    "--guidance guides the qgpo policy; drop it with --model behaviour."
                )
            field, energy_net = self.behaviour(), None
        else:
            field, energy_net = self.networks(checkpoint)
        q_net = self.q_net() if best_of > 1 else None
        pol = make_policy(cfg, field, energy_net, self.mean, self.std, self.act_dim)
        return dataclasses.replace(pol, q_net=q_net, best_of=best_of, deterministic=deterministic)


def load_run(out: str | os.PathLike) -> Run:
    """Read the run directory ``out`` written by `train` (by this or an older version)."""
    from ._data import recorded_dataset_id

    run = RunDir(out)
    if not run.is_run():
        raise ConfigError(f"{run.root} holds no config.json: not an ewfm run directory.")
    run.require("obs_stats.json", hint="it stopped before training began; resume it.")
    stats = run.read_json("obs_stats.json")
    config = read_config(run.config_path)
    return Run(
        run.root,
        config,
        np.asarray(stats["mean"], np.float32),
        np.asarray(stats["std"], np.float32),
        int(stats["act_dim"]),
        stats.get("transitions"),
        recorded_dataset_id(config.dataset, stats.get("dataset_id")),
    )


def evaluate_run(
    out: str | os.PathLike,
    *,
    episodes: int | None = None,
    seed: int = 12345,
    checkpoint: str | None = None,
    guidance: float | None = None,
    model: str = "policy",
    best_of: int = 1,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Re-evaluate the final policy (or an ``eval_*.eqx`` checkpoint, or the behaviour model
    with ``model="behaviour"``) of a run: ``episodes`` per seed (default: the run's
    ``final_episodes``), the first reset with ``seed``.

    ``guidance`` re-scores a QGPO run at another energy-gradient scale; ``best_of`` and
    ``deterministic`` change how actions are extracted (see `Run.policy`). Each evaluation
    is appended to the run's ``evaluations.jsonl`` (what was scored, how, and the scores),
    so that extras are reported beside, never instead of, the policy's own score.
    """
    from . import env_id_for

    if episodes is not None and episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}.")
    run = load_run(out)
    pol = run.policy(
        checkpoint, guidance=guidance, model=model, best_of=best_of, deterministic=deterministic
    )
    cfg = run.config
    env_id = env_id_for(cfg.dataset)
    ev = evaluate_policy(cfg, env_id, pol, episodes or cfg.final_episodes, jr.key(seed), seed)
    name = "behaviour.eqx" if model == "behaviour" else (checkpoint or "policy.eqx")
    ev["checkpoint"] = str(run.root / "checkpoints" / name)
    ev["guidance"] = pol.guidance if cfg.method == "qgpo" and model == "policy" else None
    ev["model"] = model
    ev["extract"] = extraction_name(best_of, deterministic)
    ev["seed"] = seed
    try:
        _append_evaluation(RunDir(run.root), ev)
        ev["recorded"] = True
    except OSError:  # a read-only run directory: the scores are still returned
        ev["recorded"] = False
    return ev


def extraction_name(best_of: int, deterministic: bool) -> str:
    """How actions were extracted: ``sample``, ``deterministic`` or ``best-of-N``."""
    if deterministic:
        return "deterministic"
    return f"best-of-{best_of}" if best_of > 1 else "sample"


def _append_evaluation(run: RunDir, ev: dict[str, Any]) -> None:
    """Add one record to ``evaluations.jsonl`` (rewritten whole, atomically)."""
    p = run.root / "evaluations.jsonl"
    old = p.read_text() if p.exists() else ""
    run.write_text("evaluations.jsonl", old + json.dumps(ev) + "\n")
