"""Dataset names, Minari ids, evaluation environments and D4RL-normalised scores.

A *built-in name* is ``ENV-KIND`` (``hopper-medium``, ``walker2d-medium-replay``) for the
recipes in ``policies/recipes.json``; its Minari id is ``ewfm/ENV/KIND-v0``. Any other
string containing ``/`` is taken as a Minari dataset id (``mujoco/hopper/medium-v0``).
"""

import json
from collections.abc import Sequence

import numpy as np
from jaxtyping import ArrayLike, Float

from ._pack import recipes
from ._store import local_metadata

NAMESPACE = "ewfm"
VERSION = 0
KINDS: tuple[str, ...] = ("expert", "medium", "medium-expert", "medium-replay")


def env_names() -> tuple[str, ...]:
    """The environments with built-in recipes (``halfcheetah``, ``hopper``, ``walker2d``)."""
    return tuple(sorted(recipes()))


def builtin_names() -> list[str]:
    """Every built-in dataset name, ``ENV-KIND``."""
    return [f"{env}-{kind}" for env in env_names() for kind in KINDS if kind in recipes()[env]]


def parse_builtin(name: str) -> tuple[str, str]:
    """``"hopper-medium-expert"`` -> ``("hopper", "medium-expert")``; unknown names are refused."""
    env, _, kind = name.partition("-")
    if env not in recipes() or kind not in recipes()[env] or kind not in KINDS:
        raise ValueError(
            f"unknown dataset {name!r}; built-in names are {', '.join(builtin_names())} "
            "(or pass a Minari id such as 'mujoco/hopper/medium-v0')"
        )
    return env, kind


def builtin_for_id(dataset_id_: str) -> str | None:
    """The built-in name for one of our ids (``ewfm/hopper/medium-v0`` -> ``hopper-medium``)."""
    parts = dataset_id_.split("/")
    if len(parts) != 3 or parts[0] != NAMESPACE:
        return None
    env, rest = parts[1], parts[2]
    kind, sep, version = rest.rpartition("-v")
    if not sep or not version.isdigit():
        kind = rest
    name = f"{env}-{kind}"
    try:
        parse_builtin(name)
    except ValueError:
        return None
    return name


def dataset_id(name: str) -> str:
    """The Minari id of a dataset: ``"hopper-medium"`` -> ``"ewfm/hopper/medium-v0"``.

    A full Minari id (anything containing ``/``) passes through unchanged.
    """
    if "/" in name:
        return name
    env, kind = parse_builtin(name)
    return f"{NAMESPACE}/{env}/{kind}-v{VERSION}"


def _env_key_for_gym_id(env_id: str) -> str | None:
    base = env_id.split("-v")[0].lower()
    for env in env_names():
        if recipes()[env]["env"].split("-v")[0].lower() == base:
            return env
    return None


def env_id_for(name_or_id: str) -> str:
    """The Gymnasium environment to evaluate a dataset's policies in (e.g. ``"Hopper-v5"``).

    Built-in names and ids use their recipe's environment; a Gymnasium id passes through;
    other Minari ids use the dataset's evaluation (or collection) environment spec.
    """
    builtin = builtin_for_id(name_or_id) if "/" in name_or_id else None
    if "/" not in name_or_id:
        if name_or_id in recipes():
            return recipes()[name_or_id]["env"]
        if "-v" in name_or_id and name_or_id.split("-v")[-1].isdigit():
            return name_or_id  # a Gymnasium id
        builtin = name_or_id
    if builtin is not None:
        env, _ = parse_builtin(builtin)
        return recipes()[env]["env"]
    meta = local_metadata(name_or_id)
    if meta is None:
        raise ValueError(not_found_message(name_or_id))
    for key in ("eval_env_spec", "env_spec"):
        spec = meta.get(key)
        if spec:
            spec = json.loads(spec) if isinstance(spec, str) else spec
            return str(spec["id"])
    raise ValueError(f"dataset {name_or_id!r} records no environment; evaluate it by env id")


def not_found_message(dataset_id_: str) -> str:
    """How to get a dataset that is not on this machine (build it, or download it with Minari)."""
    name = builtin_for_id(dataset_id_)
    if name is not None:
        return f"dataset {dataset_id_!r} is not built yet: run `ewfm data build {name}`"
    return (
        f"Minari dataset {dataset_id_!r} is not on this machine: download it with "
        f"`minari download {dataset_id_}` (needs network access), or build a built-in one "
        f"with `ewfm data build NAME` ({', '.join(builtin_names())})"
    )


def reference_scores(name_or_id_or_env: str) -> tuple[float, float]:
    """``(ref_min, ref_max)`` returns for normalised scores.

    Built-in names/ids, environment names (``hopper``) and Gymnasium ids (``Hopper-v5``) use
    the D4RL references in ``recipes.json``; other Minari datasets their own
    ``ref_min_score`` / ``ref_max_score`` metadata.
    """
    s = name_or_id_or_env
    env: str | None = None
    if "/" in s:
        builtin = builtin_for_id(s)
        if builtin is not None:
            env = parse_builtin(builtin)[0]
        else:
            meta = local_metadata(s)
            if meta is None:
                raise ValueError(not_found_message(s))
            if meta.get("ref_min_score") is None or meta.get("ref_max_score") is None:
                raise ValueError(
                    f"dataset {s!r} has no reference scores; normalise by an environment "
                    f"instead (one of {', '.join(recipes()[e]['env'] for e in env_names())})"
                )
            return float(meta["ref_min_score"]), float(meta["ref_max_score"])
    elif s in recipes():
        env = s
    elif _env_key_for_gym_id(s) is not None and "-v" in s:
        env = _env_key_for_gym_id(s)
    else:
        env = parse_builtin(s)[0]
    assert env is not None
    return float(recipes()[env]["ref_min"]), float(recipes()[env]["ref_max"])


def normalized_score(
    name_or_id_or_env: str, returns: ArrayLike | Sequence[float]
) -> Float[np.ndarray, "..."]:
    """D4RL-normalised score ``100 * (R - ref_min) / (ref_max - ref_min)``, elementwise."""
    lo, hi = reference_scores(name_or_id_or_env)
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
