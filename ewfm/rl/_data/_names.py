"""Dataset names, Minari ids, evaluation environments and D4RL-normalised scores.

A *built-in name* is ``ENV-KIND`` (``hopper-medium``, ``walker2d-medium-replay``) for the
recipes in ``policies/recipes.json``; its Minari id is ``ewfm/ENV/KIND-vN``, ``N`` the
recipe's version (0 unless its data were ever changed). ``ENV-KIND-vN`` names one version
explicitly: an older recipe stays buildable under it (``halfcheetah-medium-v0``), so a run
made on it can be repeated. Any other string containing ``/`` is taken as a Minari dataset
id (``mujoco/hopper/medium-v0``).
"""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import ArrayLike, Float

from ._pack import recipes
from ._store import local_metadata

NAMESPACE = "ewfm"
KINDS: tuple[str, ...] = ("expert", "medium", "medium-expert", "medium-replay")


def env_names() -> tuple[str, ...]:
    """The environments with built-in recipes (``halfcheetah``, ``hopper``, ``walker2d``)."""
    return tuple(sorted(recipes()))


def builtin_names() -> list[str]:
    """Every built-in dataset name, ``ENV-KIND`` (each at its recipe's current version)."""
    return [f"{env}-{kind}" for env in env_names() for kind in KINDS if kind in recipes()[env]]


def recipe_versions(env: str, kind: str) -> dict[int, dict[str, Any]]:
    """Every version of one recipe: ``{version: recipe}``, the current one included.

    The current recipe holds its ``version`` (default 0) and, under ``previous``, the
    recipes it replaced, by version, so that their data can still be built.
    """
    rec = dict(recipes()[env][kind])
    old = rec.pop("previous", {})
    out = {int(v): dict(r, version=int(v)) for v, r in old.items()}
    out[int(rec.get("version", 0))] = rec
    return out


def latest_version(env: str, kind: str) -> int:
    """The version a plain ``ENV-KIND`` name means."""
    return int(recipes()[env][kind].get("version", 0))


def older_names() -> list[str]:
    """The pinned names of replaced recipe versions (``halfcheetah-medium-v0``)."""
    return [
        f"{env}-{kind}-v{v}"
        for env in env_names()
        for kind in KINDS
        if kind in recipes()[env]
        for v in sorted(recipe_versions(env, kind))
        if v != latest_version(env, kind)
    ]


def _split_version(rest: str) -> tuple[str, int | None]:
    """``"medium-v0"`` -> ``("medium", 0)``; ``"medium"`` -> ``("medium", None)``."""
    kind, sep, version = rest.rpartition("-v")
    if sep and version.isdigit():
        return kind, int(version)
    return rest, None


def parse_name(name: str) -> tuple[str, str, int]:
    """``"hopper-medium"`` -> ``("hopper", "medium", 0)``, ``"halfcheetah-medium-v0"`` ->
    ``("halfcheetah", "medium", 0)``; unknown names and versions are refused."""
    env, _, rest = name.partition("-")
    kind, version = _split_version(rest)
    known = env in recipes() and kind in recipes()[env] and kind in KINDS
    if known and version is None:
        return env, kind, latest_version(env, kind)
    if known and version in recipe_versions(env, kind):
        assert version is not None
        return env, kind, version
    older = older_names()
    raise ValueError(
        f"unknown dataset {name!r}; built-in names are {', '.join(builtin_names())}"
        + (f" (older versions: {', '.join(older)})" if older else "")
        + " (or pass a Minari id such as 'mujoco/hopper/medium-v0')"
    )


def parse_builtin(name: str) -> tuple[str, str]:
    """``"hopper-medium-expert"`` -> ``("hopper", "medium-expert")``; unknown names are refused."""
    env, kind, _ = parse_name(name)
    return env, kind


def builtin_for_id(dataset_id_: str) -> str | None:
    """The built-in name for one of our ids: ``ewfm/hopper/medium-v0`` -> ``hopper-medium``
    (the current version), ``ewfm/halfcheetah/medium-v0`` -> ``halfcheetah-medium-v0`` (a
    replaced one); None for other ids."""
    parts = dataset_id_.split("/")
    if len(parts) != 3 or parts[0] != NAMESPACE:
        return None
    env, (kind, version) = parts[1], _split_version(parts[2])
    try:
        _, _, latest = parse_name(f"{env}-{kind}")
    except ValueError:
        return None
    if version is None or version == latest:
        return f"{env}-{kind}"
    return f"{env}-{kind}-v{version}" if version in recipe_versions(env, kind) else None


def dataset_id(name: str) -> str:
    """The Minari id of a dataset: ``"hopper-medium"`` -> ``"ewfm/hopper/medium-v0"``,
    ``"halfcheetah-medium-v0"`` -> ``"ewfm/halfcheetah/medium-v0"``.

    A full Minari id (anything containing ``/``) passes through unchanged.
    """
    if "/" in name:
        return name
    env, kind, version = parse_name(name)
    return f"{NAMESPACE}/{env}/{kind}-v{version}"


def recorded_dataset_id(name: str, recorded: str | None) -> str:
    """The dataset a training run used: the id it recorded, else what ``name`` meant before
    recipes had versions (version 0), since only runs from before then record no id."""
    if recorded:
        return recorded
    if "/" in name:
        return name
    env, kind, version = parse_name(name)
    pinned = _split_version(name.partition("-")[2])[1] is not None
    return f"{NAMESPACE}/{env}/{kind}-v{version if pinned else 0}"


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
        is_builtin = name_or_id.partition("-")[0] in recipes()
        if not is_builtin and "-v" in name_or_id and name_or_id.split("-v")[-1].isdigit():
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
