"""Generate the result tables of README.md and docs/ from benchmarks/results/, or check them.

Every table of measured numbers in README.md and docs/*.md sits between two markers,

    <!-- report:NAME -->
    ...generated...
    <!-- /report:NAME -->

and is rewritten here from the results files (each written by the script its provenance
names). Nothing between the markers is typed by hand.

    python benchmarks/report.py          # rewrite every block
    python benchmarks/report.py --check  # exit 1 if a block differs from its files

`tests/test_report.py` runs the check, so a README that disagrees with its results files
fails CI.
"""

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- report:([\w-]+) -->\n)(.*?)(<!-- /report:\2 -->)", re.S)


def load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def _load_text(prov: dict[str, Any] | None) -> str:
    if not prov or prov.get("loadavg") is None:
        return "load not recorded"
    return f"load {prov['loadavg'][0]:.1f}"


def source(name: str, prov: dict[str, Any] | None = None) -> str:
    """The provenance line under a table: file, command, commit, load, date."""
    prov = prov if prov is not None else load(name).get("provenance")
    if not prov:
        return f"<sub>`benchmarks/results/{name}` (no provenance recorded)</sub>"
    date = (prov.get("date") or "")[:10]
    rec = " (provenance reconstructed from git history)" if prov.get("reconstructed") else ""
    return (
        f"<sub>`benchmarks/results/{name}` · `{prov.get('command')}` · commit "
        f"{prov.get('commit')} · {_load_text(prov)} · {date}{rec}</sub>"
    )


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def f(x: float | None, nd: int = 1) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


# -- generators, one per block name ----------------------------------------------------------


def core_speed() -> str:
    d = load("core.json")
    rows = []
    for r in d["rows"]:
        if "ms" in r:
            rows.append([r["what"], f(r["ms"], 2), r.get("nfe", ""), f(r.get("x_flop_limit"), 2)])
    ratios = [[r["what"], f(r["ratio"], 2)] for r in d["rows"] if "ratio" in r]
    m = d["machine"]
    head = (
        f"QGPO-sized `ResidualMLPField` ({d['field_params']:,} parameters); matmul measured "
        f"at {m['matmul_gflops']:.0f} GFLOP/s in the same run."
    )
    return "\n\n".join(
        [
            head,
            table(["what", "ms", "NFE", "× FLOP limit"], rows),
            table(["ratio (same run)", "×"], ratios),
            source("core.json"),
        ]
    )


def policy_latency() -> str:
    d = load("policy_latency.json")
    rows = [[k, f(v["median_ms"], 2), f(v["min_ms"], 2)] for k, v in d["rows"].items()]
    return "\n\n".join(
        [
            f"{d['policy']}, one state, {d['repeats']} repeats.",
            table(["call path", "median ms", "min ms"], rows),
            source("policy_latency.json"),
        ]
    )


def rl_seeds() -> str:
    d = load("rl_seeds.json")
    rows = [
        [r["stage"], f(r["steps_per_s_1_seed"], 0), f(r["seed_steps_per_s_k_seeds"], 0),
         f(r["speedup_vs_sequential"], 2)]
        for r in d["rows"]
    ]  # fmt: skip
    return "\n\n".join(
        [
            f"`--seeds {d['seeds']}` in one vmapped program against {d['seeds']} sequential runs.",
            table(["stage", "steps/s, 1 seed", "steps/s per seed, vmapped", "speed-up"], rows),
            source("rl_seeds.json"),
        ]
    )


def rl_stage_speed() -> str:
    files = sorted(RESULTS.glob("rl_stage_speed_*.json"))
    if not files:
        return "Not measured yet: `python benchmarks/rl_stage_speed.py`."
    rows = []
    for p in files:
        d = json.loads(p.read_text())
        for r in d["stages"]:
            rows.append(
                [d["preset"], r["stage"], f(r["steps_per_s"], 0), f(r["gflop_per_step"] * 1e3, 0),
                 f(r["achieved_gflops"], 0), "×".join(map(str, r["matmul_shape"])),
                 f(r["matmul_gflops_at_shape"], 0), f(r["limit_steps_per_s"], 0),
                 f"{r['efficiency']:.0%}", f(d["peak_matmul_gflops"], 0)]
            )  # fmt: skip
    return "\n\n".join(
        [
            "Each stage's training step (one seed, its jitted epoch program) against a float32 "
            "matmul of its largest layer shape (rows × width × width) timed in the same "
            "process: MFLOP per step is XLA's count for the gradient of the stage's loss on "
            "one batch; the limit is that count at the matmul's rate.",
            table(
                [
                    "preset",
                    "stage",
                    "steps/s",
                    "MFLOP/step",
                    "GFLOP/s",
                    "matmul shape",
                    "matmul GFLOP/s",
                    "limit steps/s",
                    "of limit",
                    "peak (1024³)",
                ],
                rows,
            ),
            "<br>".join(source(p.name) for p in files),
        ]
    )


def toy_sampling() -> str:
    d = load("toy.json")
    rows = [
        [k, v["solver"], v["nfe"], f(v["ms_per_1000"], 1), f(v["ratio_to_efm"], 2)]
        for k, v in d["rows"].items()
    ]
    return "\n\n".join(
        [
            f"{d['data']}, beta {d['beta']:g}, {d['n']:,} samples, fastest of {d['repeats']}.",
            table(["method", "solver", "NFE", "ms per 1,000", "× EFM"], rows),
            source("toy.json"),
        ]
    )


def _toy_sweep() -> tuple[str, dict[str, Any]]:
    """The fullest toy sweep on file: the full one if it exists, else the subset."""
    for name in ("toy_sweep_full.json", "toy_sweep.json"):
        if (RESULTS / name).exists():
            return name, load(name)
    raise SystemExit("no toy sweep results: run python benchmarks/toy_sweep.py")


def _toy_head(name: str, d: dict[str, Any]) -> str:
    c = d["config"]
    return (
        f"`{d['preset']}` preset: {len(d['datasets'])} data sets × {len(d['methods'])} methods × "
        f"beta {', '.join(f'{b:g}' for b in d['betas'])}; {c['n_data']:,} points per data set, "
        f"{c['steps']:,} steps of batch {c['batch_size']} per network, {c['n_eval']:,} samples "
        f"per set, NLL of {c['n_nll']:,} exact samples. {d['networks_trained']} networks; "
        f"{d['wall_s']:.0f} s wall, {d['cpu_s']:.0f} CPU-s in all."
    )


def _toy_table(d: dict[str, Any], field: str, nd: int, extra: str | None) -> str:
    recs = {(r["data"], r["method"], r["beta"]): r for r in d["records"]}
    rows = []
    for data in d["datasets"]:
        if extra is not None:
            ref = [recs.get((data, d["methods"][0], b)) for b in d["betas"]]
            label = "*floor*" if extra == "floor" else "*exact*"
            rows.append([data, label, *[f(r and r[extra], nd) for r in ref]])
        for m in d["methods"]:
            rows.append([data, m, *[f((r := recs.get((data, m, b))) and r[field], nd)
                                    for b in d["betas"]]])  # fmt: skip
    return table(["data", "method", *[f"β={b:g}" for b in d["betas"]]], rows)


def toy_sweep_sw2() -> str:
    name, d = _toy_sweep()
    return "\n\n".join(
        [
            _toy_head(name, d)
            + " Sliced Wasserstein-2 distance to exact target samples (lower is better; "
            "*floor*: two independent exact sets).",
            _toy_table(d, "sw2", 3, "floor"),
            source(name),
        ]
    )


def toy_sweep_energy() -> str:
    name, d = _toy_sweep()
    return "\n\n".join(
        [
            "Mean energy of the samples (*exact*: under the target), same runs.",
            _toy_table(d, "mean_energy", 3, "exact_mean_energy"),
            source(name),
        ]
    )


def toy_sweep_nll() -> str:
    name, d = _toy_sweep()
    return "\n\n".join(
        [
            "NLL (nats) of exact target samples under each model (`ewfm.log_likelihood`), "
            "same runs.",
            _toy_table(d, "nll", 2, None),
            source(name),
        ]
    )


def toy_sweep_summary() -> str:
    name, d = _toy_sweep()
    rows = []
    for m, r in d["per_method"].items():
        goals = (
            [f"{r['ok_fm']} / {r['goal_cases']}", f"{r['ok_qgpo']} / {r['goal_cases']}",
             f"{r['within_115_qgpo']} / {r['goal_cases']}"]
            if "goal_cases" in r else ["", "", ""]
        )  # fmt: skip
        rows.append([m, f(r["median_sw2_over_floor"], 2), f(r["mean_abs_energy_error"], 3), *goals])
    return "\n\n".join(
        [
            "Per method, over every (data set, beta) cell: the median of SW2 / floor and the "
            "mean absolute error of the mean energy; for EFM, ED and efm-beta at beta > 0, the "
            "cells within 1.5 × the unguided model's distance to the data, at most QGPO's "
            "distance, and within 1.15 × QGPO's.",
            table(
                [
                    "method",
                    "median SW2 / floor",
                    "mean energy error",
                    "≤ 1.5 × fm to data",
                    "≤ QGPO",
                    "≤ 1.15 × QGPO",
                ],
                rows,
            ),
            source(name),
        ]
    )


def _energy_rows(recs: dict[str, Any], names: list[tuple[str, str]]) -> list[list[Any]]:
    rows = []
    for key, label in names:
        if key not in recs:
            continue
        r = recs[key]
        by = {row["beta"]: row for row in r["rows"]}
        cells = [
            f"{by[b]['mean_energy']:.3f} ({by[b]['z']:+.1f})" if b in by else "–"
            for b in (0.0, 1.0, 3.0, 10.0)
        ]
        tv = sum(row["tv"] for row in r["rows"]) if len(by) == 4 else None
        rows.append([f"{label} (`{key}`)", *cells, f(tv, 2)])
    return rows


def images_shapes() -> str:
    d = load("images_beta.json")
    names = [
        ("residual", "EFM, residual beta net (default)"),
        ("residual-phi-energy", "EFM, `--beta-phi energy`"),
        ("ed-v", "ED, v-prediction (default)"),
        ("cep", "CEP (QGPO-style gradient guidance)"),
        ("unguided", "unguided flow matching"),
    ]
    first = next(iter(d.values()))
    target = {row["beta"]: row["target"] for row in first["rows"]}
    trow = ["exact target", *[f"{target.get(b, float('nan')):.3f}" for b in (0, 1, 3, 10)], ""]
    rows = [trow, *_energy_rows(d, names)]
    provs = {k: d[k].get("provenance") for k, _ in names if k in d}
    lines = [source("images_beta.json", p) + f" <sub>(`{k}`)</sub>" for k, p in provs.items()]
    return "\n\n".join(
        [
            "Mean energy at each beta (in brackets: bias in standard errors); last column: hue "
            "TV distance to the exact target summed over the four betas.",
            table(["run", "beta 0", "beta 1", "beta 3", "beta 10", "summed TV"], rows),
            "<br>".join(lines),
        ]
    )


def images_twemoji() -> str:
    recs: dict[str, Any] = {}
    files = {}
    for name in ("images_twemoji.json", "images_twemoji_linear.json", "images_twemoji_energy.json"):
        for k, v in load(name).items():
            recs[k] = v
            files[k] = name
    names = [(k, f"{recs[k]['config']['steps']} steps, phi {recs[k]['config']['beta_phi']}")
             for k in recs]  # fmt: skip
    first = next(iter(recs.values()))
    target = {row["beta"]: row["target"] for row in first["rows"]}
    trow = ["exact target", *[f"{target.get(b, float('nan')):.3f}" for b in (0, 1, 3, 10)], ""]
    rows = [trow, *_energy_rows(recs, names)]
    lines = [source(files[k], recs[k].get("provenance")) for k in recs]
    return "\n\n".join(
        [
            "32×32 Twemoji, target hue 210°, 128 samples per beta.",
            table(["run", "beta 0", "beta 1", "beta 3", "beta 10", "summed TV"], rows),
            "<br>".join(lines),
        ]
    )


BETAS = (0.0, 1.0, 3.0, 10.0)


def _records(*names: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The named records of several `images_beta.py` files, and the file of each."""
    recs: dict[str, Any] = {}
    files: dict[str, str] = {}
    for name in names:
        for k, v in load(name).items():
            recs[k], files[k] = v, name
    return recs, files


def _beta_runs(names: list[tuple[str, str]], *files: str, time_col: str = "cpu") -> str:
    """One row per `images_beta.py` record: mean energy (z) at each beta, hue TV at each
    beta, training time; first the exact target's mean energy and the TV floor, from the
    first record (every record of a table shares data, seeds and n)."""
    recs, where = _records(*files)
    first = recs[names[0][0]]
    by0 = {row["beta"]: row for row in first["rows"]}
    top = [
        f"exact target (TV: floor for n = {first['n']})",
        *[f"{by0[b]['target']:.3f}" if b in by0 else "–" for b in BETAS],
        ", ".join(f"{by0[b]['tv_floor']:.3f}" if b in by0 else "–" for b in BETAS),
        "",
    ]
    rows = [top]
    for key, label in names:
        r = recs[key]
        by = {row["beta"]: row for row in r["rows"]}
        energy = [f"{by[b]['mean_energy']:.3f} ({by[b]['z']:+.1f})" if b in by else "–"
                  for b in BETAS]  # fmt: skip
        tv = ", ".join(f"{by[b]['tv']:.3f}" if b in by else "–" for b in BETAS)
        if time_col == "cpu":
            t = f(r.get("train_cpu_s"), 0)
        else:
            t = f"{f(r.get('train_wall_s'), 0)} / {f(r.get('train_cpu_s'), 0)}"
        rows.append([f"{label} (`{key}`)", *energy, tv, t])
    head = ["run", "beta 0: E (z)", "beta 1", "beta 3", "beta 10", "hue TV at beta 0, 1, 3, 10"]
    head.append("train CPU-s" if time_col == "cpu" else "train wall s / CPU-s")
    lines = [source(where[k], recs[k].get("provenance")) + f" <sub>(`{k}`)</sub>" for k, _ in names]
    return "\n\n".join(
        [
            f"Mean energy E of {first['n']} samples per beta (z: bias in standard errors, |z| < 3 "
            "is within sampling noise) and the hue histogram's TV distance to the exact target.",
            table(head, rows),
            "<br>".join(lines),
        ]
    )


def images_beta_draws() -> str:
    names = [
        ("batch-old", "`input`, `batch`, no point mass (Algorithm 6)"),
        ("sample", "`input`, `sample`, no point mass"),
        ("batch-zero25", "`input`, `batch`, 25% at beta 0"),
        ("sample-zero25", "`input`, `sample`, 25% at beta 0 (the previous default)"),
        ("sample-zero25-scale4", "`input`, `sample`, 25%, beta features ×4"),
        ("input-resample-zero25", "`input`, `resample`, 25% at beta 0"),
        ("unguided", "plain flow matching, fixed beta 0 (the unguided reference)"),
        ("residual", "**`residual`, `sample`, no point mass (default)**"),
        ("quick-s5-cli", "the same settings, trained by `ewfm images train --quick`"),
        ("residual-phi-energy", "`residual`, `--beta-phi energy`"),
        ("residual-detach-patch", "`residual`, head input detached (one-line patch)"),
        ("efm-fixed10", "EFM at the fixed beta 10 (`--fixed-beta 10`)"),
    ]
    return _beta_runs(names, "images_beta.json")


def images_ed() -> str:
    names = [
        ("ed-v", "ED, U-Net predicts `v` (default)"),
        ("ed-residual", "ED, U-Net predicts `eps`"),
        ("ed-sample-zero25", "ED, `eps`, `input` net, 25% at beta 0"),
        ("ed-v-fixed10", "ED, `v`, fixed beta 10"),
        ("ed-eps-fixed10", "ED, `eps`, fixed beta 10"),
        ("efm-fixed10", "EFM, fixed beta 10"),
    ]
    return _beta_runs(names, "images_beta.json")


def images_cep() -> str:
    names = [
        ("cep", "CEP (QGPO-style gradient guidance)"),
        ("residual", "EFM, residual beta net (default)"),
        ("ed-v", "ED, `v`"),
    ]
    return _beta_runs(names, "images_beta.json")


def images_twemoji_runs() -> str:
    names = [
        ("twemoji-residual-linear", "1,200 steps, `--beta-phi linear` (default)"),
        ("twemoji-phi-energy", "1,200 steps, `--beta-phi energy`"),
        ("twemoji-2400-linear", "2,400 steps, `linear`"),
        ("twemoji-2400-energy", "2,400 steps, `energy`"),
    ]
    files = ("images_twemoji.json", "images_twemoji_linear.json", "images_twemoji_energy.json")
    return _beta_runs(names, *files, time_col="wall")


def images_data() -> str:
    d = load("images_data.json")
    parts = []
    for preset, p in d["presets"].items():
        shares = sorted(p["class_share"].items(), key=lambda kv: -kv[1])
        cells = ", ".join(
            (k if k == "achromatic" else f"{k}°") + f" {100 * v:.1f}%" for k, v in shares if v > 0
        )
        rows = [
            [f"{t['beta']:g}", f"{t['mean_energy']:.3f}", f"{t['ess']:,.0f}",
             f"{100 * t['target_class_share']:.1f}%"]
            for t in p["exact_target"]
        ]  # fmt: skip
        parts += [
            f"**{p['data']}** ({preset} preset, {p['size']}x{p['size']}, target hue "
            f"{p['target_hue']:g}°): {p['training_images']:,} training images, "
            f"{p['held_out']:,} held out. Hue-class shares: {cells}.",
            table(
                [
                    "beta",
                    "exact mean energy",
                    "effective sample size",
                    f"share of the {p['target_class']}° class",
                ],
                rows,
            ),
        ]
    phi = d["presets"]["showcase"]["phi"]
    parts.append(
        "`--beta-phi energy` on Twemoji against `linear`: "
        + "; ".join(f"phi({r['beta']:g}) = {r['energy']:.2f} vs {r['linear']:.2f}" for r in phi)
        + "."
    )
    t = d["timings"]
    parts.append(
        f"4,096 shapes at 16x16: {t['shapes_4096_16px_s']:.2f} s; Twemoji at 32x32: "
        f"{t['twemoji_render_s']:.1f} s to render from the PNGs, {t['twemoji_read_s']:.2f} s to "
        "read from the cache."
    )
    parts.append(source("images_data.json"))
    return "\n\n".join(parts)


def images_sampling() -> str:
    d = load("images_sampling.json")
    rows = [
        [r["method"], r["solver"], r["steps"], f(r["median_s"], 2), f(r["ratio_to_first"], 2)]
        for r in d["rows"]
    ]
    return "\n\n".join(
        [
            f"{d['n']} images at beta {d['beta']:g}, median of the interleaved repeats.",
            table(["method", "solver", "steps", "seconds", "× first row"], rows),
            source("images_sampling.json"),
        ]
    )


def datasets_recipes() -> str:
    d = load("rl_datasets.json")
    rows = [
        [r["name"], f"{r['transitions']:,}", r["episodes"],
         f"{r['normalized_mean']:.1f} ± {r['normalized_std']:.1f}", f(r.get("steps_per_s"), 0)]
        for r in d["rows"]
    ]  # fmt: skip
    return "\n\n".join(
        [
            f"Each built-in recipe at {d['steps_per_dataset']:,} steps (normalised return of "
            "its episodes):",
            table(["dataset", "transitions", "episodes", "normalised return", "steps/s"], rows),
            source("rl_datasets.json"),
        ]
    )


def datasets_build() -> str:
    b = load("rl_build.json")
    brows = [[r["setting"], f(r["steps_per_s"], 0), f(r.get("minutes_per_1M"), 1)]
             for r in b["rows"]]  # fmt: skip
    return "\n\n".join(
        [
            f"Build speed, {b['name']}, {b['steps']:,} steps:",
            table(["setting", "steps/s", "minutes per 1M"], brows),
            source("rl_build.json"),
        ]
    )


def datasets() -> str:
    return "\n\n".join([datasets_recipes(), datasets_build()])


def datasets_spread() -> str:
    d = load("rl_action_spread.json")
    rows = []
    for r in d["rows"]:
        se = f" ± {r['normalized_se']:.1f}" if r.get("normalized_se") is not None else ""
        for i, p in enumerate(r["parts"]):
            s = p["action_spread"] or {}
            span = f"{s['taken_std_min']:.2f}–{s['taken_std_max']:.2f}" if s else ""
            taken = f"{s['taken_std_mean']:.2f} ({span})" if s else "–"
            rows.append(
                [f"`{r['name']}`" if i == 0 else "", f"`{r['dataset_id']}`" if i == 0 else "",
                 p["policy"], _mode(p), f"{p['noise']:g}",
                 f(s.get("own_std_mean"), 2), taken,
                 f"{r['normalized_mean']:.1f}{se} ({r['episodes']})" if i == 0 else ""]
            )  # fmt: skip
    head = ["name", "Minari id", "policy", "mode", "noise", "own std", "taken std (min–max)",
            "normalised return (episodes)"]  # fmt: skip
    return "\n\n".join(
        [
            f"Per part, at up to {_spread_states(d)} of its recorded states with "
            f"{_spread_samples(d)} draws each, mean over action dimensions; recipes collected "
            f"at {d['steps_per_dataset']:,} transitions"
            + "".join(f", {n} at {k:,}" for n, k in d.get("steps_for", {}).items())
            + "; return: mean ± standard error over the episodes collected.",
            table(head, rows),
            source("rl_action_spread.json"),
        ]
    )


def _mode(part: dict[str, Any]) -> str:
    if part["policy"] == "random":
        return "uniform"
    return "stoch." if part["stochastic"] else "det."


def _spread_states(d: dict[str, Any]) -> int:
    return max((p["action_spread"] or {}).get("states", 0) for r in d["rows"] for p in r["parts"])


def _spread_samples(d: dict[str, Any]) -> int:
    return max((p["action_spread"] or {}).get("samples", 0) for r in d["rows"] for p in r["parts"])


def pack_returns() -> str:
    d = load("rl_pack_returns.json")
    rows = [
        [r["policy"], r["mode"], r["episodes"], f"{r['mean']:.1f} ± {r['se']:.1f}",
         f(r["mean_length"], 1), f"{r['index_mean']:.1f} ± {r['index_std']:.1f}",
         f"{r['z_vs_index']:+.2f}"]
        for r in d["rows"]
    ]  # fmt: skip
    return "\n\n".join(
        [
            f"Raw return over {d['episodes']} episodes (seeds from {d['first_seed']:,}) ± "
            "standard error, beside `index.json`'s 10-episode mean ± std; z: the difference "
            "over its standard error.",
            table(
                [
                    "policy",
                    "mode",
                    "episodes",
                    "return",
                    "episode length",
                    "`index.json` (10 episodes)",
                    "z",
                ],
                rows,
            ),
            source("rl_pack_returns.json"),
        ]
    )


def q_truth() -> str:
    rows = []
    files = sorted(RESULTS.glob("rl_q_truth_*_mean.json"))
    for p in files:
        d = json.loads(p.read_text())
        rows.append(
            [_ds_of(d), Path(d["run"]).name, f(d["rank_corr_critic_truth"], 3),
             f(d["critic_spread_within"], 2), f(d["true_spread_within"], 2)]
        )  # fmt: skip
    return "\n\n".join(
        [
            "Critic against the exact return of each support (64 states × 16 supports, seed 0; "
            "a deterministic 300-step continuation by the dataset's policy).",
            table(
                [
                    "dataset",
                    "run",
                    "rank corr. within state",
                    "critic spread within state",
                    "true spread within state",
                ],
                rows,
            ),
            "<br>".join(source(p.name) for p in files),
        ]
    )


def rl_scores() -> str:
    p = RESULTS / "rl_runs.json"
    if not p.exists():
        return "No RL run has been collected into `benchmarks/results/rl_runs.json` yet."
    d = json.loads(p.read_text())
    rows = []
    for r in d["runs"]:
        gains = r.get("seed_gain_over_bc")
        rows.append(
            [r["dataset"], _method(r), r["seeds"], r["episodes_per_seed"],
             f"{r['score_mean']:.1f} ± {r['score_se']:.1f}",
             "–" if r.get("bc_mean") is None else f"{r['bc_mean']:.1f} ± {r['bc_se']:.1f}",
             "–" if gains is None else " / ".join(f"{g:+.1f}" for g in gains),
             "–" if r.get("best_eval") is None else f(r["best_eval"], 1)]
        )  # fmt: skip
    return "\n\n".join(
        [
            "Final policy, normalised score: mean over seeds ± standard error over seeds. BC "
            "is each run's own warm-up model scored on the same episodes' seeds. The last "
            "column is the best periodic evaluation during training (labelled as such; not "
            "the reported score).",
            table(
                [
                    "dataset",
                    "method",
                    "seeds",
                    "episodes/seed",
                    "score",
                    "its BC",
                    "gain over BC per seed",
                    "best during training",
                ],
                rows,
            ),
            source("rl_runs.json", d.get("provenance")),
        ]
    )


# -- docs/theory.md: the theorem checks ------------------------------------------------------


def _cell(text: str) -> str:
    """Plain text in a table cell: a ``|`` would end the cell, ``*`` start emphasis."""
    return text.replace("|", "\\|").replace("*", "\\*")


def _check_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [f"`{r['name']}`", r["subject"], _cell(r["statement"]),
         "non-finite" if r["max_error"] is None else f"{r['max_error']:.2e}",
         f"{r['tolerance']:.0e}", "pass" if r["passed"] else "**fail**", f(r["seconds"], 1)]
        for r in rows
    ]  # fmt: skip


def _checks_total(d: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    cpu = d.get("cpu_seconds_total")
    return (
        f"{sum(r['passed'] for r in rows)} of {len(rows)} checks pass; the whole run took "
        f"{d['seconds_total']:.1f} s wall"
        + ("" if cpu is None else f", {cpu:.1f} CPU-s")
        + " (compilation included)."
    )


CHECK_HEAD = ["check", "tests", "statement", "max error", "tolerance", "pass/fail", "seconds"]


def theorems() -> str:
    d = load("theorems.json")
    return "\n\n".join(
        [
            table(CHECK_HEAD, _check_rows(d["rows"])),
            _checks_total(d, d["rows"]),
            source("theorems.json"),
        ]
    )


def theorems_trained() -> str:
    d = load("theorems_trained.json")
    rows = [r for r in d["rows"] if r["name"].startswith("trained-")]
    return "\n\n".join(
        [
            table(CHECK_HEAD, _check_rows(rows)),
            _checks_total(d, d["rows"]) + " That run repeats the exact checks first.",
            source("theorems_trained.json"),
        ]
    )


def theorems_info() -> str:
    """What the checks measure besides their errors (each check's `info`)."""
    d = load("theorems.json")
    info = {r["name"]: r.get("info") or {} for r in d["rows"]}
    lines = []
    for name, loss in (("theorem-4.3", "efm_loss"), ("corollary-4.8", "ed_loss")):
        i = info[name]
        cells = [
            f"{p}: z = {i[f'{p}/E[{loss}] z-score']:.1f} "
            f"({100 * i[f'{p}/E[{loss}] relative difference']:.1f}% of the loss)"
            for p in ("OT", "VP")
            if f"{p}/E[{loss}] z-score" in i
        ]
        if cells:
            lines.append(
                f"- `{name}`: `{loss}` averaged over 256 keys against its exact expectation, "
                + "; ".join(cells)
                + "."
            )
    i = info["eq-5.4"]
    if "s=+1/mean" in i:
        lines.append(
            "- `eq-5.4`: after two renewals the policy's mean is "
            f"{i['s=+1/mean']:+.3f} and {i['s=-1/mean']:+.3f} (closed form ±2/3) and its variance "
            f"{i['s=+1/variance']:.3f} and {i['s=-1/variance']:.3f} (closed form 1/3) in the two "
            "contexts, averaged over 32 states."
        )
    i = info["lemma-4.10"]
    paths = [p for p in ("OT", "VP") if f"{p}/w=2.0/max|CFG - EG|" in i]
    if paths:
        lines.append(
            "- `lemma-4.10`: at `w = 2` CFG differs from energy guidance pointwise by up to "
            + " and ".join(f"{i[f'{p}/w=2.0/max|CFG - EG|']:.2f} ({p})" for p in paths)
            + " in velocity, and its samples miss `N(m*_2, S*_2)` by "
            + " and ".join(f"{i[f'{p}/w=2.0/CFG pushforward miss']:.3f} ({p})" for p in paths)
            + " (relative error of mean and covariance)."
        )
    return "\n".join(lines) + "\n\n" + source("theorems.json")


# -- docs/rl.md: the RL runs and the critic's ground truth -----------------------------------


def _rl_runs() -> dict[str, Any]:
    p = RESULTS / "rl_runs.json"
    return json.loads(p.read_text()) if p.exists() else {"runs": []}


def _method(r: dict[str, Any]) -> str:
    """The method of a run row, with the settings that make it a variant (if any)."""
    return r["method"] + (f" ({r['variant']})" if r.get("variant") else "")


def _ds(name: str) -> str:
    """``ewfm/hopper/medium-v0`` -> ``hopper-medium``; an id of a recipe version that has
    since been replaced keeps its version (``halfcheetah-medium-v0``), as its name does."""
    parts = name.split("/")
    if len(parts) != 3:
        return name
    kind, _, version = parts[2].rpartition("-v")
    recipe = _recipes().get(parts[1], {}).get(kind, {})
    current = str(recipe.get("version", 0))
    return f"{parts[1]}-{kind}" + ("" if version == current else f"-v{version}")


def _ds_of(d: dict[str, Any]) -> str:
    """The dataset a results file of one run names: its ``dataset_id`` if recorded, else its
    configured name as it was read when made (before recipe versions: version 0)."""
    if d.get("dataset_id"):
        return _ds(d["dataset_id"])
    env, _, kind = str(d["dataset"]).partition("-")
    if env not in _recipes() or "/" in kind:
        return d["dataset"]
    return _ds(f"ewfm/{env}/{kind}" + ("" if re.search(r"-v\d+$", kind) else "-v0"))


def _recipes() -> dict[str, Any]:
    return json.loads((ROOT / "ewfm" / "rl" / "policies" / "recipes.json").read_text())


def rl_seed_scores() -> str:
    d = _rl_runs()
    rows = []
    for r in d["runs"]:
        mid = next((e for e in r.get("periodic_evals", []) if e.get("seed_scores")), None)
        bc = r.get("bc_seed_scores") or [None] * r["seeds"]
        gains = r.get("seed_gain_over_bc") or [None] * r["seeds"]
        for j, score in enumerate(r["seed_scores"]):
            rows.append(
                [_ds(r["dataset"]), _method(r), r["seed"] + j, f(score, 1), f(bc[j], 1),
                 "–" if gains[j] is None else f"{gains[j]:+.1f}",
                 "–" if mid is None else f(mid["seed_scores"][j], 1)]
            )  # fmt: skip
    eps = ", ".join(sorted({str(r["episodes_per_seed"]) for r in d["runs"]})) or "–"
    mid_eps = next(
        (e["episodes"] // len(e["seed_scores"]) for r in d["runs"]
         for e in r.get("periodic_evals", []) if e.get("seed_scores") and e.get("episodes")),
        None,
    )  # fmt: skip
    return "\n\n".join(
        [
            f"Each seed's final policy and its own BC warm-up ({eps} episodes each, the same "
            "episode seeds), and the periodic evaluation after the first renewal (epoch 2"
            + ("" if mid_eps is None else f", {mid_eps} episodes per seed")
            + ").",
            table(
                ["dataset", "method", "seed", "final score", "its BC", "gain", "after 1 renewal"],
                rows,
            ),
            source("rl_runs.json", d.get("provenance")),
        ]
    )


def rl_extras() -> str:
    """`ewfm evaluate` records of the collected runs, one column per (model, extraction)."""
    d = _rl_runs()
    cols: list[tuple[str, str]] = []
    rows = []
    for r in d["runs"]:
        cells: dict[tuple[str, str], str] = {}
        seeds = {e["seed"] for e in r.get("extras", [])}
        for e in r.get("extras", []):  # the latest record of each kind wins
            key = (e["model"], e["extract"])
            cells[key] = f"{e['score_mean']:.1f} ± {e['score_se']:.1f}"
            if key not in cols:
                cols.append(key)
        if cells:
            eps = {e["episodes"] // len(e["seed_scores"]) for e in r["extras"]}
            rows.append(
                (r, ", ".join(map(str, sorted(seeds))), ", ".join(map(str, sorted(eps))), cells)
            )
    if not rows:
        return "No evaluation extras have been collected yet (`ewfm evaluate RUN --best-of N`)."
    order = {"sample": 0, "deterministic": 1}
    cols.sort(key=lambda c: (c[0] != "policy", order.get(c[1], 2), c[1]))
    name = lambda c: ("policy" if c[0] == "policy" else "BC") + f", {c[1]}"
    body = [
        [_ds(r["dataset"]), _method(r), seed, eps, *[cells.get(c, "–") for c in cols]]
        for r, seed, eps, cells in rows
    ]
    return "\n\n".join(
        [
            "`ewfm evaluate` on each run's own networks, all at the same first episode seed "
            "(mean over the run's seeds ± standard error over seeds). `policy`: the final "
            "policy; `BC`: the run's behaviour model. `sample` draws the noise as the policy "
            "does; `deterministic` integrates from zero noise; `best-of-N` acts with the "
            "highest-Q of N draws by the run's critic (IDQL's extraction).",
            table(["dataset", "method", "episode seed", "episodes/seed", *map(name, cols)], body),
            source("rl_runs.json", d.get("provenance")),
        ]
    )


def rl_verdict() -> str:
    """Each QIPO run against the goal of +10 over its own BC, seed by seed."""
    d = _rl_runs()
    rows = []
    for r in d["runs"]:
        g = r.get("seed_gain_over_bc")
        if not g:
            continue
        m = sum(g) / len(g)
        se = (sum((x - m) ** 2 for x in g) / (len(g) - 1) / len(g)) ** 0.5 if len(g) > 1 else None
        k = sum(x >= 10 for x in g)
        if m >= 10 and k == len(g):
            reading = "met by every seed"
        elif m >= 10:
            reading = f"met on the mean only: {k} of {len(g)} seeds reach +10"
        elif m > 0:
            reading = "missed (above BC, below +10)"
        else:
            reading = "missed (below BC)"
        rows.append(
            [_ds(r["dataset"]), _method(r), f"{r['beta']:g}", r["q_norm"],
             f"{m:+.1f}" + ("" if se is None else f" ± {se:.1f}"),
             f"{k} of {len(g)}", f"{sum(x > 0 for x in g)} of {len(g)}", reading]
        )  # fmt: skip
    return "\n\n".join(
        [
            "Gain of the final policy over its own BC warm-up: mean over seeds ± standard error "
            "over seeds, and how many seeds reach the goal of +10 or gain at all.",
            table(
                [
                    "dataset",
                    "method",
                    "β",
                    "`q_norm`",
                    "gain over BC",
                    "seeds ≥ +10",
                    "seeds > 0",
                    "goal +10",
                ],
                rows,
            ),
            source("rl_runs.json", d.get("provenance")),
        ]
    )


def rl_renewals() -> str:
    d = _rl_runs()
    rows = []
    for r in d["runs"]:
        for n, x in enumerate(r.get("renewals", []), 1):
            rows.append(
                [_ds(r["dataset"]), _method(r), f"{r['beta']:g}", r["q_norm"], n,
                 f(x.get("q_mean"), 1), f(x.get("q_std_within"), 2), f(x.get("w_max_mean"), 1),
                 f(x.get("w_data_mean"), 2),
                 "–" if x.get("q_trust") is None else " / ".join(f"{t:.2f}" for t in x["q_trust"])]
            )  # fmt: skip
    m = next((r["renewals"] for r in d["runs"] if r.get("renewals")), None)
    if m is None:
        return "No collected run has renewal statistics yet (`python benchmarks/rl_results.py`)."
    return "\n\n".join(
        [
            "The support set at each renewal (raw Q, seeds pooled): mean Q, Q's spread within "
            "a state (std over its supports, averaged over states), and the mean largest and "
            "dataset-action weight out of M = 16 (uniform weights: 1 each). With `q_trust "
            "twins`, the twins' ranking reliability per seed, the factor on β.",
            table(
                [
                    "dataset",
                    "method",
                    "β",
                    "`q_norm`",
                    "renewal",
                    "mean Q",
                    "Q spread within",
                    "largest weight",
                    "dataset-action weight",
                    "twins' reliability",
                ],
                rows,
            ),
            source("rl_runs.json", d.get("provenance")),
        ]
    )


def rl_run_cost() -> str:
    d = _rl_runs()
    rows = []
    for r in d["runs"]:
        st, sps = r.get("stage_seconds") or {}, r.get("steps_per_s") or {}
        stages = [s for s in ("behaviour", "critic", "qipo", "cep") if s in st]
        rows.append(
            [_ds(r["dataset"]), _method(r), r["seeds"], f(r.get("wall_seconds"), 0),
             ", ".join(f"{s} {st[s]:.0f}" for s in stages),
             ", ".join(f"{s} {sps[s]:.1f}" for s in stages if s in sps)]
        )  # fmt: skip
    return "\n\n".join(
        [
            "Wall seconds of each run as its `summary.json` records them (the whole run, all "
            "seeds in one program), per stage, and training steps/s "
            "per stage (one step trains every seed). The runs shared the 2-core machine with "
            "other work and their load was not recorded: read the times as upper bounds.",
            table(["dataset", "method", "seeds", "wall s", "stage s", "steps/s"], rows),
            source("rl_runs.json", d.get("provenance")),
        ]
    )


def _across_states(json_path: Path) -> float | None:
    """Correlation of critic and truth over all (state, support) pairs, from the .npz."""
    npz = json_path.with_suffix(".npz")
    if not npz.exists():
        return None
    import numpy as np

    z = np.load(npz)
    q, t = z["q"].ravel(), z["returns"].mean(-1).ravel()
    return float(np.corrcoef(q, t)[0, 1])


def q_truth_gains() -> str:
    files = sorted(RESULTS.glob("rl_q_truth_*_mean.json"))
    rows = []
    for p in files:
        d = json.loads(p.read_text())
        g = d["gain"]
        rows.append(
            [_ds_of(d), Path(d["run"]).name, f(_across_states(p), 3),
             f"{g['none beta 1.0']['critic']:+.2f} / {g['spread beta 1.0']['critic']:+.2f}",
             f"{g['none beta 1.0']['truth']:+.2f} / {g['spread beta 1.0']['truth']:+.2f}",
             f"{g['argmax']['critic']:+.2f} / {g['argmax']['truth']:+.2f}",
             f"{d['edge_minus_inner_critic']:+.2f} / {d['edge_minus_inner_true']:+.2f}"]
        )  # fmt: skip
    return "\n\n".join(
        [
            "The same measurements, further: the correlation of critic and truth across "
            "states, over all (state, support) pairs (computed from the `.npz` beside each "
            "file); the true Q gained, averaged over states, by the weights `M softmax(β Q)` "
            "at β = 1 (`q_norm` `none` / `spread`), `Σ_j w_j Q_true,j / M − mean_j Q_true,j`, "
            "with the critic's Q and with the true Q itself (the best a critic could do); the "
            "true Q of the critic's top support and of the best support, above the state's "
            "mean; and how much higher edge-of-box supports (a coordinate beyond ±0.99) are "
            "valued than a state's inner ones, by the critic and by the truth.",
            table(
                [
                    "dataset",
                    "critic of run",
                    "corr. across states",
                    "gain, critic's weights",
                    "gain, true weights",
                    "top support: critic's / best",
                    "edge − inner: critic / truth",
                ],
                rows,
            ),
            "<br>".join(source(p.name) for p in files),
        ]
    )


def q_truth_noise() -> str:
    files = sorted(RESULTS.glob("rl_q_truth_*_stochastic.json"))
    rows = []
    for p in files:
        d = json.loads(p.read_text())
        rows.append(
            [_ds_of(d), Path(d["run"]).name, d["states"], d["rollouts"],
             f(d["rank_corr_critic_truth"], 3), f(d["rank_corr_truth_split_half"], 3),
             f"{d['gain']['none beta 1.0']['truth']:+.2f}"]
        )  # fmt: skip
    return "\n\n".join(
        [
            "With the behaviour policy's own noise in the continuation "
            "(`--continuation stochastic`, common random numbers across a state's supports): "
            "the truth's split-half rank correlation is its noise ceiling; the true weights' "
            "gain is chosen on one half of the rollouts and scored on the other.",
            table(
                [
                    "dataset",
                    "critic of run",
                    "states",
                    "rollouts",
                    "rank corr. critic/truth",
                    "split-half ceiling",
                    "gain, true weights (β = 1, `none`)",
                ],
                rows,
            ),
            "<br>".join(source(p.name) for p in files),
        ]
    )


def diagnose_critic() -> str:
    files = sorted(RESULTS.glob("rl_diagnose_critic_*.json"))
    if not files:
        return (
            "No run diagnosed yet: `python benchmarks/rl_diagnose_critic.py RUN` records "
            "`ewfm diagnose critic RUN` here."
        )
    rows = []
    for p in files:
        d = json.loads(p.read_text())
        for name, r in d["probes"].items():
            probe = f"{name} (±{d['radius']:g})" if name == "radius" else name
            rows.append(
                [_ds_of(d), Path(d["run"]).name, d["seed"], d["critic"], probe,
                 f"{d['states']} × {d['supports']} × {d['rollouts']}, {d['horizon']} steps",
                 f"{r['rank_corr']:.3f} ± {r['rank_corr_se']:.3f}", f(r["ceiling"], 3),
                 f(r["rank_fraction"], 2),
                 f"{r['gain_critic']:+.2f} ± {r['gain_critic_se']:.2f} / "
                 f"{r['gain_truth']:+.2f} ± {r['gain_truth_se']:.2f}",
                 f(r["gain_fraction"], 2),
                 f"{r['slope_critic']:+.2f} / {r['slope_truth']:+.2f}",
                 f(d["seconds"], 0)]
            )  # fmt: skip
    return "\n\n".join(
        [
            "`ewfm diagnose critic RUN` on finished runs: per probe, the mean within-state "
            "Spearman correlation of the critic with the expected return (± its standard "
            "error over states); the ceiling, what a critic equal to the true expected Q "
            "would score against the same rollouts; the correlation as a share of it; the "
            "true Q gained over the supports' mean by QIPO's weights (the run's β and "
            "`q_norm`) and by the truth's own, cross-fitted (± standard errors over states), "
            "and the first as a share of the second (it can exceed 1: the truth's weights see "
            "half the rollouts); the within-state "
            "slope of Q on ‖a‖², critic / truth; and the diagnosis's seconds.",
            table(
                [
                    "dataset",
                    "run",
                    "seed",
                    "critic",
                    "probe",
                    "states × supports × rollouts",
                    "rank corr.",
                    "ceiling",
                    "of ceiling",
                    "gain: critic / truth",
                    "gain, of truth's",
                    "‖a‖² slope: critic / truth",
                    "seconds",
                ],
                rows,
            ),
            "<br>".join(source(p.name) for p in files),
        ]
    )


GENERATORS: dict[str, Callable[[], str]] = {
    "core-speed": core_speed,
    "policy-latency": policy_latency,
    "rl-seeds": rl_seeds,
    "rl-stage-speed": rl_stage_speed,
    "toy-sampling": toy_sampling,
    "toy-sweep-sw2": toy_sweep_sw2,
    "toy-sweep-energy": toy_sweep_energy,
    "toy-sweep-nll": toy_sweep_nll,
    "toy-sweep-summary": toy_sweep_summary,
    "images-shapes": images_shapes,
    "images-twemoji": images_twemoji,
    "images-sampling": images_sampling,
    "images-beta-draws": images_beta_draws,
    "images-ed": images_ed,
    "images-cep": images_cep,
    "images-twemoji-runs": images_twemoji_runs,
    "images-data": images_data,
    "datasets": datasets,
    "datasets-recipes": datasets_recipes,
    "datasets-build": datasets_build,
    "datasets-spread": datasets_spread,
    "pack-returns": pack_returns,
    "q-truth": q_truth,
    "rl-scores": rl_scores,
    "theorems": theorems,
    "theorems-trained": theorems_trained,
    "theorems-info": theorems_info,
    "rl-seed-scores": rl_seed_scores,
    "rl-verdict": rl_verdict,
    "rl-extras": rl_extras,
    "rl-renewals": rl_renewals,
    "rl-run-cost": rl_run_cost,
    "q-truth-gains": q_truth_gains,
    "q-truth-noise": q_truth_noise,
    "diagnose-critic": diagnose_critic,
}


def render(text: str, where: str) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(2)
        if name not in GENERATORS:
            raise SystemExit(f"{where}: unknown report block {name!r}; known: {list(GENERATORS)}")
        return f"{m.group(1)}{GENERATORS[name]().strip()}\n{m.group(4)}"

    return BLOCK.sub(sub, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if any block is stale")
    args = ap.parse_args()
    stale = []
    for path in TARGETS:
        old = path.read_text()
        new = render(old, str(path.relative_to(ROOT)))
        if new != old:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(
            "stale report blocks in " + ", ".join(stale) + ": run python benchmarks/report.py",
            file=sys.stderr,
        )
        return 1
    print(("rewrote " if stale else "up to date: ") + (", ".join(stale) or "all blocks"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
