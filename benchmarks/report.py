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


def datasets() -> str:
    d = load("rl_datasets.json")
    rows = [
        [r["name"], f"{r['transitions']:,}", r["episodes"],
         f"{r['normalized_mean']:.1f} ± {r['normalized_std']:.1f}", f(r.get("steps_per_s"), 0)]
        for r in d["rows"]
    ]  # fmt: skip
    b = load("rl_build.json")
    brows = [[r["setting"], f(r["steps_per_s"], 0), f(r.get("minutes_per_1M"), 1)]
             for r in b["rows"]]  # fmt: skip
    return "\n\n".join(
        [
            f"Each built-in recipe at {d['steps_per_dataset']:,} steps (normalised return of "
            "its episodes):",
            table(["dataset", "transitions", "episodes", "normalised return", "steps/s"], rows),
            source("rl_datasets.json"),
            f"Build speed, {b['name']}, {b['steps']:,} steps:",
            table(["setting", "steps/s", "minutes per 1M"], brows),
            source("rl_build.json"),
        ]
    )


def q_truth() -> str:
    rows = []
    files = sorted(RESULTS.glob("rl_q_truth_*_mean.json"))
    for p in files:
        d = json.loads(p.read_text())
        rows.append(
            [d["dataset"], Path(d["run"]).name, f(d["rank_corr_critic_truth"], 3),
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
            [r["dataset"], r["method"], r["seeds"], r["episodes_per_seed"],
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


GENERATORS: dict[str, Callable[[], str]] = {
    "core-speed": core_speed,
    "policy-latency": policy_latency,
    "rl-seeds": rl_seeds,
    "toy-sampling": toy_sampling,
    "images-shapes": images_shapes,
    "images-twemoji": images_twemoji,
    "images-sampling": images_sampling,
    "datasets": datasets,
    "q-truth": q_truth,
    "rl-scores": rl_scores,
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
