"""Table 1 from per-seed evaluations: aggregation, the markdown table, the bar chart and the
t-SNE figure of defect-area features. Shared by the pipeline's ``report`` stage and the multi-seed
experiment (:mod:`mentoring.experiments.table1`).

Per variant: mean and standard deviation over seeds, at two levels (:mod:`mentoring.evaluation`):

- **defect level** (``defect_*`` keys): original/new mAP of detected areas matched to defects,
  new-domain precision/recall @ threshold and false alarms per image;
- **cell level** (the unprefixed keys, as before): original/new mAP over cells, new-domain
  precision/recall @ threshold;

and the image-level false-reject and escape rates, and per level the **gap closed** to the
oracle, (mAP_new(v) - mAP_new(baseline)) / (mAP_new(oracle) - mAP_new(baseline)). Evaluations
written before the defect level existed leave its columns empty ("-").

Outputs (``<out>``): ``table1.json``, ``table1.md``, ``plots/variants.png`` (bar chart) and
``plots/tsne.png`` (defect-area features of both domains, without and with DANN, like the paper's
Figure 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from mentoring.config import STRATEGY_FLAGS, Params, parse_strategy
from mentoring.data.dataset import load_targets
from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.data.reader import image_batches
from mentoring.io import write_bytes, write_json, write_with
from mentoring.line.preview import CLASS_COLORS
from mentoring.models.store import load_model

#: row labels of the paper's table
LABELS = {
    "baseline": "Baseline",
    "scratch": "w/ new data",
    "transfer": "+ transfer learning",
    "scratch+omnia": "+ OMNIA-like",
    "scratch+healthy": "+ healthy knowledge",
    "scratch+dann": "+ DANN",
    "oracle": "Oracle (full labels of the new pool)",
}
#: names of strategy parts in combined row labels
PART_NAMES = {
    "transfer": "transfer",
    "omnia": "OMNIA-like",
    "healthy": "healthy knowledge",
    "dann": "DANN",
    "distill": "distillation",
    "oracle": "oracle",
}
#: the single-fix rows; any other strategy with several parts is a combination
SINGLE = ("scratch", "transfer", "scratch+omnia", "scratch+healthy", "scratch+dann", "oracle")
#: defect-level columns of Table 1
DEFECT_KEYS = (
    "defect_map_original",
    "defect_map_new",
    "defect_precision_new",
    "defect_recall_new",
    "defect_false_alarms_new",
    "defect_gap_closed",
)
#: cell-level and image-level columns (their names predate the defect level)
CELL_KEYS = (
    "map_original",
    "map_new",
    "precision_new",
    "recall_new",
    "false_reject_new",
    "escape_new",
    "gap_closed",
)
KEYS = DEFECT_KEYS + CELL_KEYS


def label(variant: str) -> str:
    """The row label of a variant: the paper's wording, or its parts joined with '+'."""
    if variant in LABELS:
        return LABELS[variant]
    parts = parse_strategy(variant) - {"scratch"}
    return "+ " + " + ".join(PART_NAMES[p] for p in STRATEGY_FLAGS if p in parts)


def _row(ev: dict[str, Any]) -> dict[str, float]:
    o, n = ev["domains"]["original"], ev["domains"]["new"]
    row = {
        "map_original": o["map"],
        "map_new": n["map"],
        "precision_new": n["precision"],
        "recall_new": n["recall"],
        "false_reject_new": n["false_reject_rate"],
        "escape_new": n["escape_rate"],
    }
    if "defect" in o and "defect" in n:
        od, nd = o["defect"], n["defect"]
        row |= {
            "defect_map_original": od["map"],
            "defect_map_new": nd["map"],
            "defect_precision_new": nd["precision"],
            "defect_recall_new": nd["recall"],
            "defect_false_alarms_new": nd["false_alarms_per_image"],
        }
    return row


def _gap(value: float, base: float, oracle: float | None) -> float | None:
    """Share of the baseline-to-oracle new-mAP gap closed; None without an oracle gap."""
    return (value - base) / (oracle - base) if oracle is not None and oracle != base else None


def aggregate(
    per_seed: dict[int, dict[str, dict[str, Any]]],
    labels: dict[str, str] | None = None,
    candidates: list[str] | None = None,
) -> dict[str, Any]:
    """Mean and std per variant over seeds; ``per_seed[seed][variant]`` is an evaluation.

    ``labels``: row labels of variants that are not strategy names; ``candidates``: the
    variants the best combination is chosen from (default: every variant)."""
    labels = labels or {}
    variants = list(next(iter(per_seed.values())))
    rows: dict[str, dict[str, list[float]]] = {v: {k: [] for k in KEYS} for v in variants}
    # the gap's denominator: the best oracle row (from scratch or transfer+oracle) per level
    oracles = [v for v in variants if _is_oracle(v)]
    best_oracle: dict[str, str | None] = {}
    for prefix in ("", "defect_"):
        key = prefix + "map_new"
        scored = [
            (float(np.mean([_row(e[v]).get(key, np.nan) for e in per_seed.values()])), v)
            for v in oracles
        ]
        scored = [(m, v) for m, v in scored if not np.isnan(m)]
        best_oracle[prefix] = max(scored)[1] if scored else None
    for evals in per_seed.values():
        table_rows = {v: _row(evals[v]) for v in variants}
        for prefix in ("", "defect_"):
            key = prefix + "map_new"
            if key not in table_rows["baseline"]:
                continue
            base = table_rows["baseline"][key]
            ref = best_oracle[prefix]
            oracle = table_rows[ref].get(key) if ref else None
            for r in table_rows.values():
                gap = _gap(r[key], base, oracle) if key in r else None
                if gap is not None:
                    r[prefix + "gap_closed"] = gap
        for v, r in table_rows.items():
            for k, val in r.items():
                rows[v][k].append(val)
    table: dict[str, Any] = {}
    for v in variants:
        table[v] = {"label": labels.get(v) or label(v)}
        for k, vals in rows[v].items():
            if vals:
                table[v][k] = {
                    "mean": float(np.mean(vals)),
                    "std": float(np.std(vals)),
                    "values": vals,
                }
    pool = candidates if candidates is not None else variants
    combos = [
        v
        for v in pool
        if v in variants and v not in SINGLE and v != "baseline" and not _is_oracle(v)
    ]
    # the best combination by new-domain mAP at defect level (cell level for older evaluations)
    lead = "defect_map_new" if all("defect_map_new" in table[v] for v in combos) else "map_new"
    best = max(combos, key=lambda v: table[v][lead]["mean"]) if combos else None
    return {
        "variants": table,
        "best_combination": best,
        "seeds": sorted(per_seed),
        "best_oracle": {"defect": best_oracle["defect_"], "cell": best_oracle[""]},
    }


def _is_oracle(variant: str) -> bool:
    try:
        return "oracle" in parse_strategy(variant)
    except ValueError:  # a row's own name, not a strategy
        return False


def _fmt(cell: dict[str, float] | None, n_seeds: int) -> str:
    if cell is None:
        return "-"
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}" if n_seeds > 1 else f"{cell['mean']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """The table laid out like the paper's Table 1, defect level then cell level, plus the
    image-level rates and the gap closed at each level."""
    n = len(result["seeds"])
    t = result["variants"]
    base = {
        k: t["baseline"][k]["mean"]
        for k in ("map_original", "defect_map_original")
        if k in t["baseline"]
    }
    order = [v for v in ("baseline", *SINGLE[:-1]) if v in t]
    if result["best_combination"]:
        order.append(result["best_combination"])
    order += [v for v in t if v not in order and not _is_oracle(v)]
    order += [v for v in t if _is_oracle(v)]
    lines = [
        f"Table 1 on the synthetic line: {n} seed(s) {result['seeds']}, mean"
        + (" ± std" if n > 1 else "")
        + ". **Defect level**: detected areas (connected cells at p >= the detection threshold) "
        "matched to defects (connected components of the ground truth) at cell IoU >= "
        "evaluate.match_iou, COCO AP; false alarms = unmatched detections per image. "
        "**Cell level**: every cell of every class. Precision, recall, false alarms, "
        "false-reject and escape rates at threshold 0.5 on the new domain's evaluation set.",
        "",
        "| | defect: original mAP | new mAP | new precision | new recall | false alarms / image "
        "| cell: original mAP | new mAP | new precision | new recall "
        "| image: false-reject | escape | gap closed (defect) | gap closed (cell) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in order:
        r = t[v]
        best = " (best combination)" if v == result["best_combination"] else ""
        cells = [f"{r['label']}{best}"]
        for k in (*DEFECT_KEYS[:-1], *CELL_KEYS[:-1], "defect_gap_closed", "gap_closed"):
            text = _fmt(r.get(k), n)
            if k in base and k in r:
                text += f" ({r[k]['mean'] - base[k]:+.3f})"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: the fixes of the paper's section 3.4, each against "w/ new data"
FIXES = ("transfer", "scratch+omnia", "scratch+healthy", "scratch+dann")


def _save(fig: Any, path: Path) -> None:
    """Lay out, write atomically as PNG (110 dpi) and close a figure."""
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def results_checks(result: dict[str, Any], level: str = "defect") -> list[dict[str, Any]]:
    """The issue's results checks at ``level``, each met or not with the measured numbers
    (means over seeds); never forced: a check without its rows is reported as not run."""
    t = result["variants"]
    pre = "defect_" if level == "defect" else ""

    def m(v: str, k: str) -> float:
        return float(t[v][pre + k]["mean"])

    checks: list[dict[str, Any]] = []
    if {"baseline", "scratch"} <= set(t) and pre + "map_new" in t["scratch"]:
        gain = m("scratch", "map_new") - m("baseline", "map_new")
        dprec = m("scratch", "precision_new") - m("baseline", "precision_new")
        checks.append(
            {
                "check": '"w/ new data" beats the baseline on new mAP and loses precision',
                "met": gain > 0 and dprec < 0,
                "detail": f"new mAP {gain:+.3f}, new precision {dprec:+.3f}",
            }
        )
        fixes = [v for v in FIXES if v in t]
        ref_prec, ref_map = m("scratch", "precision_new"), m("scratch", "map_new")
        bad = [
            f"{t[v]['label']} (precision {m(v, 'precision_new') - ref_prec:+.3f}"
            f", new mAP {m(v, 'map_new') - ref_map:+.3f})"
            for v in fixes
            if not (
                m(v, "precision_new") > m("scratch", "precision_new")
                and m(v, "map_new") >= m("scratch", "map_new")
            )
        ]
        checks.append(
            {
                "check": 'every fix raises new precision over "w/ new data" with new mAP at '
                "least as high",
                "met": bool(fixes) and not bad,
                "detail": "; ".join(bad) if bad else f"all {len(fixes)} fixes",
            }
        )
    if "baseline" in t:
        base = m("baseline", "map_original")
        losers = [
            f"{t[v]['label']} ({m(v, 'map_original') - base:+.3f})"
            for v in t
            if v != "baseline" and not _is_oracle(v) and base - m(v, "map_original") > 0.02
        ]
        checks.append(
            {
                "check": "no variant loses more than 0.02 original mAP",
                "met": not losers,
                "detail": "; ".join(losers) if losers else "none does",
            }
        )
    best = result.get("best_combination")
    oracle = (result.get("best_oracle") or {}).get(level)
    if best and oracle and pre + "gap_closed" in t[best]:
        gap = float(t[best][pre + "gap_closed"]["mean"])
        checks.append(
            {
                "check": "the best variant closes >= 80% of the gap to the best oracle",
                "met": gap >= 0.8,
                "detail": f"{t[best]['label']}: {gap:.0%} of the gap to {t[oracle]['label']}",
            }
        )
    return checks


def checks_markdown(result: dict[str, Any]) -> str:
    lines = ["", "Results checks (means over the seeds; reported, never forced):", ""]
    for level in ("defect", "cell"):
        for c in results_checks(result, level):
            lines.append(
                f"- {level} level: {c['check']}: **{'met' if c['met'] else 'not met'}** "
                f"({c['detail']})"
            )
    return "\n".join(lines) + "\n"


def plot_variants(result: dict[str, Any], path: Path) -> None:
    """Grouped bars per level (defect above, cell below): new mAP, new precision, new recall
    and original mAP per variant."""
    t = result["variants"]
    names = list(t)
    levels = [
        (lvl, prefix)
        for lvl, prefix in (("defect level", "defect_"), ("cell level", ""))
        if all(prefix + "map_new" in t[v] for v in names)
    ]
    x = np.arange(len(names))
    width = 0.2
    fig, axes = plt.subplots(
        len(levels), 1, figsize=(max(7.0, 1.1 * len(names)), 3.6 * len(levels)), squeeze=False
    )
    for ax, (lvl, prefix) in zip(axes[:, 0], levels, strict=True):
        keys = [
            (prefix + "map_new", "new mAP"),
            (prefix + "precision_new", "new precision@0.5"),
            (prefix + "recall_new", "new recall@0.5"),
            (prefix + "map_original", "original mAP"),
        ]
        for i, (k, name) in enumerate(keys):
            means = [t[v][k]["mean"] for v in names]
            stds = [t[v][k]["std"] for v in names]
            ax.bar(x + (i - 1.5) * width, means, width, yerr=stds, label=name, capsize=2)
        ax.set_xticks(x, [t[v]["label"] for v in names], rotation=25, ha="right", fontsize=8)
        ax.set(ylim=(0, 1.05), ylabel=f"score, {lvl}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.15), frameon=False)
    _save(fig, path)


@torch.no_grad()
def defect_features(
    model_path: Path, params: Params, manifest: Path, per_domain: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of ground-truth defect areas of both evaluation sets.

    Returns (F, D, K): (n, channels) features, (n,) domain 0/1, (n,) class index.
    """
    model, _ = load_model(model_path)
    rng = np.random.default_rng(seed)
    feats, doms, ks = [], [], []
    root = data_root(manifest)
    for d, domain in enumerate(("original", "new")):
        df = select(read_manifest(manifest), domain, "eval")
        if df.empty:
            raise ValueError(f"{manifest}: no images of domain {domain!r}, split 'eval'")
        # which defect cells to show, from the masks alone; then the images stream by batch and
        # only the picked cells' features are kept
        t = load_targets(
            df, root, params.line.classes, params.model.stride, params.line.cell_min_coverage
        ).numpy()  # (N, C, h, w)
        n_idx, r_idx, c_idx = np.nonzero(t.any(axis=1))
        pick = rng.permutation(len(n_idx))[:per_domain]
        n_idx, r_idx, c_idx = n_idx[pick], r_idx[pick], c_idx[pick]
        f = np.zeros((len(n_idx), model.feature_channels), np.float32)
        for start, images in image_batches(df, root, 64):
            sel = np.flatnonzero((n_idx >= start) & (n_idx < start + len(images)))
            if len(sel):
                fb = model.features(images.float() / 255.0).numpy()  # (B, F, h, w)
                f[sel] = fb[n_idx[sel] - start, :, r_idx[sel], c_idx[sel]]
        feats.append(f)
        doms.append(np.full(len(n_idx), d))
        ks.append(t[n_idx, :, r_idx, c_idx].argmax(axis=1))
    return np.concatenate(feats), np.concatenate(doms), np.concatenate(ks)


def domain_separability(feats: np.ndarray, domains: np.ndarray, seed: int) -> float:
    """Cross-validated accuracy of a linear domain classifier on features (0.5 = aligned)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return float(cross_val_score(clf, feats, domains, cv=5).mean())


def plot_tsne(
    models: dict[str, Path],
    params: Params,
    manifest: Path,
    path: Path,
    seed: int = 0,
    per_domain: int = 300,
) -> dict[str, float]:
    """t-SNE of defect-area features per model; returns each model's domain separability."""
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.8), squeeze=False)
    sep = {}
    for ax, (name, mpath) in zip(axes[0], models.items(), strict=True):
        f, dom, k = defect_features(mpath, params, manifest, per_domain, seed)
        sep[name] = domain_separability(f, dom, seed)
        emb = TSNE(
            n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (len(f) - 1) / 3)
        ).fit_transform(f)
        for d, marker in ((0, "o"), (1, "x")):
            for c in np.unique(k):
                sel = (dom == d) & (k == c)
                ax.scatter(
                    emb[sel, 0],
                    emb[sel, 1],
                    s=10,
                    marker=marker,
                    color=CLASS_COLORS[int(c) % 7],
                    alpha=0.7,
                    linewidths=0.8,
                )
        ax.set_title(
            f"{label(name)}\nlinear domain accuracy {sep[name]:.2f} (0.5 = aligned)", fontsize=9
        )
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        plt.Line2D([], [], ls="", marker="s", color=CLASS_COLORS[i % 7], label=c)
        for i, c in enumerate(params.line.classes)
    ]
    handles += [
        plt.Line2D([], [], ls="", marker="o", color="gray", label="original"),
        plt.Line2D([], [], ls="", marker="x", color="gray", label="new"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return sep


def report(
    per_seed: dict[int, dict[str, dict[str, Any]]],
    out: Path,
    tsne: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    candidates: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``table1.json``, ``table1.md`` and the bar chart; return the aggregate."""
    result = aggregate(per_seed, labels, candidates)
    if tsne:
        result["domain_separability"] = tsne
    # the flat layout: one entry per variant with mean/std per key
    flat = {
        v: {k: r[k] for k in KEYS if k in r} | {"label": r["label"]}
        for v, r in result["variants"].items()
    }
    checks = {lvl: results_checks(result, lvl) for lvl in ("defect", "cell")}
    write_json(
        out / "table1.json",
        {
            "variants": flat,
            "best_combination": result["best_combination"],
            "best_oracle": result["best_oracle"],
            "seeds": result["seeds"],
            "domain_separability": tsne or {},
            "checks": checks,
        },
    )
    write_bytes(out / "table1.md", (markdown(result) + checks_markdown(result)).encode())
    plot_variants(result, out / "plots" / "variants.png")
    return result


#: columns of an experiment's rows table: (key, header)
ROW_COLUMNS = (
    ("defect_map_original", "defect: original mAP"),
    ("defect_map_new", "new mAP"),
    ("defect_precision_new", "new precision"),
    ("defect_recall_new", "new recall"),
    ("map_original", "cell: original mAP"),
    ("map_new", "new mAP"),
    ("precision_new", "new precision"),
)
#: label-noise columns: (key, header); shares of the annotated defective / healthy entries
NOISE_COLUMNS = (
    ("n_defective", "annotated defective"),
    ("share_correct_defective", "correct"),
    ("share_halo", "halo"),
    ("share_wrong_class", "wrong class"),
    ("share_spurious", "spurious"),
    ("n_healthy", "annotated healthy"),
    ("share_defect_marked_healthy", "defects marked healthy"),
)


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


def rows_markdown(result: dict[str, Any], reference: str) -> str:
    """An experiment's rows: both levels, the change against ``reference`` at defect level with
    a verdict (helps both domains or not), the label noise and DANN's domain accuracy."""
    t, n = result["variants"], len(result["seeds"])
    ref = t[reference]
    lines = [
        f"{n} seed(s) {result['seeds']}, mean" + (" ± std" if n > 1 else "") + f"; Δ against "
        f"**{ref['label']}** at defect level (new mAP / original mAP); a row *helps both* "
        "when both means rise.",
        "",
        "| | " + " | ".join(h for _, h in ROW_COLUMNS) + " | Δ new | Δ original | verdict |",
        "|---" * (len(ROW_COLUMNS) + 4) + "|",
    ]
    for v, r in t.items():
        cells = [r["label"], *(_fmt(r.get(k), n) for k, _ in ROW_COLUMNS)]
        if v in ("baseline", reference) or "defect_map_new" not in r:
            cells += ["", "", "reference" if v == reference else ""]
        else:
            dn = r["defect_map_new"]["mean"] - ref["defect_map_new"]["mean"]
            do = r["defect_map_original"]["mean"] - ref["defect_map_original"]["mean"]
            verdict = "helps both" if dn > 0 and do > 0 else "does not help both"
            cells += [f"{dn:+.3f}", f"{do:+.3f}", verdict]
        lines.append("| " + " | ".join(cells) + " |")
    noise = result.get("label_noise") or {}
    if noise:
        lines += [
            "",
            "Label noise of what each row trains on (mentored images, against the hidden truth; "
            "shares of the annotated defective, then healthy, entries):",
            "",
            "| | " + " | ".join(h for _, h in NOISE_COLUMNS) + " |",
            "|---" * (len(NOISE_COLUMNS) + 1) + "|",
        ]
        for v, r in noise.items():
            cells = [t[v]["label"]]
            for k, _ in NOISE_COLUMNS:
                m = r[k]["mean"]
                cells.append(f"{m:.0f}" if k.startswith("n_") else f"{m:.1%}")
            lines.append("| " + " | ".join(cells) + " |")
    dacc = result.get("domain_accuracy") or {}
    if dacc:
        lines += [
            "",
            "DANN's domain segmenter: share of cells whose domain it tells right (0.5 = chance), "
            "first and last epoch:",
            "",
        ]
        for v, r in dacc.items():
            lines.append(
                f"- {t[v]['label']}: {r['first']['mean']:.3f} → {r['last']['mean']:.3f} "
                f"(± {r['last']['std']:.3f})"
            )
    return "\n".join(lines) + "\n"


def plot_domain_accuracy(
    curves: dict[str, list[list[float]]], labels: dict[str, str], path: Path
) -> None:
    """Domain accuracy per epoch of each DANN row (mean over seeds, band = min..max)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for v, per_seed in curves.items():
        arr = np.array(per_seed)
        x = np.arange(1, arr.shape[1] + 1)
        ax.plot(x, arr.mean(axis=0), label=labels[v])
        ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), alpha=0.2)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set(xlabel="epoch", ylabel="domain accuracy", ylim=(0.3, 1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def report_rows(
    per_seed: dict[int, dict[str, Any]],
    out: Path,
    labels: dict[str, str],
    reference: str,
    title: str = "Experiment",
) -> dict[str, Any]:
    """Write ``rows.json``, ``rows.md`` and plots of an experiment; ``per_seed[seed]`` is what
    :func:`mentoring.experiments.rows.run_seed` returns. Returns the aggregate."""
    result = aggregate({s: r["evaluations"] for s, r in per_seed.items()}, labels, candidates=[])
    if reference not in result["variants"]:
        raise ValueError(f"reference row {reference!r} is not among {list(result['variants'])}")
    noise: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[list[float]]] = {}
    for r in per_seed.values():
        for v, nz in (r.get("label_noise") or {}).items():
            if nz is not None:
                for k, val in nz.items():
                    noise.setdefault(v, {}).setdefault(k, []).append(val)
        for v, hist in (r.get("histories") or {}).items():
            acc = [h["parts"]["d_acc"] for h in hist if "d_acc" in h.get("parts", {})]
            if acc:
                curves.setdefault(v, []).append(acc)
    result["label_noise"] = {v: {k: _mean_std(x) for k, x in d.items()} for v, d in noise.items()}
    result["domain_accuracy"] = {
        v: {"first": _mean_std([c[0] for c in cs]), "last": _mean_std([c[-1] for c in cs])}
        for v, cs in curves.items()
    }
    result["reference"] = reference
    write_json(out / "rows.json", result)
    md = f"# {title}\n\n" + rows_markdown(result, reference)
    write_bytes(out / "rows.md", md.encode())
    plot_variants(result, out / "plots" / "variants.png")
    if curves:
        plot_domain_accuracy(
            curves,
            {v: result["variants"][v]["label"] for v in curves},
            out / "plots" / "domain_accuracy.png",
        )
    return result


def _curve_stats(xs: list[list[float]], ys: list[list[float]]) -> tuple[np.ndarray, ...]:
    """Mean x, mean y and std y per point over seeds (curves cut to the shortest)."""
    n = min(len(x) for x in xs)
    x = np.array([v[:n] for v in xs], float)
    y = np.array([v[:n] for v in ys], float)
    return x.mean(axis=0), y.mean(axis=0), y.std(axis=0)


def report_rounds(per_seed: dict[int, dict[str, Any]], out: Path) -> dict[str, Any]:
    """``rounds.json``, ``rounds.md`` and ``plots/rounds.png``: new-domain mAP (both levels) and
    original-domain mAP against the operator verdicts so far, mean ± std over seeds."""
    strategy = next(iter(per_seed.values()))["strategy"]
    keys = {
        "defect new mAP": ("new", "defect"),
        "defect original mAP": ("original", "defect"),
        "cell new mAP": ("new", None),
        "cell original mAP": ("original", None),
    }

    def value(ev: dict[str, Any], dom: str, lvl: str | None) -> float:
        m = ev["domains"][dom]
        return float((m[lvl] if lvl else m)["map"])

    xs = [[float(p["verdicts"]) for p in r["points"]] for r in per_seed.values()]
    curves = {}
    for name, (dom, lvl) in keys.items():
        ys = [[value(p["evaluation"], dom, lvl) for p in r["points"]] for r in per_seed.values()]
        x, y, sd = _curve_stats(xs, ys)
        curves[name] = {"verdicts": x.tolist(), "mean": y.tolist(), "std": sd.tolist()}
    promoted = [[p["promoted"] for p in r["points"]] for r in per_seed.values()]
    result = {
        "strategy": strategy,
        "seeds": sorted(per_seed),
        "curves": curves,
        "promoted": promoted,
    }
    write_json(out / "rounds.json", result | {"per_seed": per_seed})
    n = len(per_seed)
    lines = [
        f"# Multi-round mentoring: {strategy}",
        "",
        f"{n} seed(s) {sorted(per_seed)}, mean ± std. Round 0 is the baseline; each round the "
        "champion mines what operators have not answered yet (the last refused candidate, in "
        "shadow mode, when the champion has nothing left), and the candidate trained on "
        "every round's labels is promoted only through the gate.",
        "",
        "| round | operator verdicts | " + " | ".join(keys) + " | promoted (seeds) |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for k in range(len(curves["defect new mAP"]["mean"])):
        c = curves["defect new mAP"]
        cells = [str(k), f"{c['verdicts'][k]:.0f}"]
        cells += [f"{curves[nm]['mean'][k]:.3f} ± {curves[nm]['std'][k]:.3f}" for nm in keys]
        cells.append(f"{sum(p[k] for p in promoted if k < len(p))}/{n}")
        lines.append("| " + " | ".join(cells) + " |")
    write_bytes(out / "rounds.md", ("\n".join(lines) + "\n").encode())
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, c in curves.items():
        x, m, sd = (np.array(c[k]) for k in ("verdicts", "mean", "std"))
        ax.errorbar(
            x, m, yerr=sd, marker="o", capsize=3, label=name, ls="-" if "new" in name else "--"
        )
    ax.set(
        xlabel="operator verdicts so far",
        ylabel="mAP",
        ylim=(0, 1.02),
        title=f"Multi-round mentoring ({strategy})",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out / "plots" / "rounds.png")
    return result


def report_efficiency(
    per_seed: dict[int, dict[str, Any]],
    out: Path,
    heuristics: list[str],
    budgets: list[int],
) -> dict[str, Any]:
    """``efficiency.json``, ``efficiency.md`` and ``plots/efficiency.png``: new-domain mAP
    against operator verdicts per mining heuristic and budget, mean ± std over seeds."""
    table: dict[str, dict[str, Any]] = {}
    for h in heuristics:
        for b in budgets:
            name = f"{h}-{b}"
            vs, dn, do, cn = [], [], [], []
            for r in per_seed.values():
                key = r["row_data"][name]
                mentored = r["data"][key]["mentor"]
                vs.append(
                    mentored["n_confirmed"] + mentored["n_infirmed"] + mentored["n_healthy_images"]
                )
                ev = r["evaluations"][name]["domains"]
                dn.append(ev["new"]["defect"]["map"])
                do.append(ev["original"]["defect"]["map"])
                cn.append(ev["new"]["map"])
            table[name] = {
                "heuristic": h,
                "budget": b,
                "verdicts": _mean_std(vs),
                "defect_map_new": _mean_std(dn),
                "defect_map_original": _mean_std(do),
                "map_new": _mean_std(cn),
            }
    result = {"seeds": sorted(per_seed), "rows": table}
    write_json(out / "efficiency.json", result)
    lines = [
        "# Label efficiency: mining heuristics at several budgets",
        "",
        f"{len(per_seed)} seed(s) {sorted(per_seed)}, mean ± std. Budget = most images mined; "
        "verdicts = areas confirmed or infirmed + images flagged healthy.",
        "",
        "| heuristic | budget (images) | operator verdicts | defect new mAP | defect original mAP "
        "| cell new mAP |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.values():
        lines.append(
            f"| {r['heuristic']} | {r['budget']} | {r['verdicts']['mean']:.0f} | "
            + " | ".join(
                f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}"
                for k in ("defect_map_new", "defect_map_original", "map_new")
            )
            + " |"
        )
    write_bytes(out / "efficiency.md", ("\n".join(lines) + "\n").encode())
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for h in heuristics:
        rows = [table[f"{h}-{b}"] for b in budgets]
        ax.errorbar(
            [r["verdicts"]["mean"] for r in rows],
            [r["defect_map_new"]["mean"] for r in rows],
            yerr=[r["defect_map_new"]["std"] for r in rows],
            marker="o",
            capsize=3,
            label=h,
        )
    ax.set(
        xlabel="operator verdicts",
        ylabel="new-domain mAP (defect level)",
        title="Label efficiency of mining heuristics",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out / "plots" / "efficiency.png")
    return result


def report_budget(
    per_seed: dict[int, dict[str, Any]], out: Path, strategy: str, epochs: list[int]
) -> dict[str, Any]:
    """``budget.json``, ``budget.md`` and ``plots/budget.png``: a strategy's mAPs and new-domain
    precision against its epoch budget, at defect and cell level, mean ± std over seeds."""
    keys = {
        "defect new mAP": ("new", "defect", "map"),
        "defect original mAP": ("original", "defect", "map"),
        "defect new precision": ("new", "defect", "precision"),
        "cell new mAP": ("new", None, "map"),
        "cell original mAP": ("original", None, "map"),
        "cell new precision": ("new", None, "precision"),
    }

    def seeds_of(row: str, key: str) -> list[float]:
        """``key``'s value of evaluation ``row``, one per seed."""
        dom, lvl, metric = keys[key]
        out = []
        for r in per_seed.values():
            m = r["evaluations"][row]["domains"][dom]
            out.append(float((m[lvl] if lvl else m)[metric]))
        return out

    curves: dict[str, dict[str, list[float]]] = {}
    for name in keys:
        vals = [seeds_of(f"{strategy}-e{e}", name) for e in epochs]
        curves[name] = {
            "mean": [float(np.mean(v)) for v in vals],
            "std": [float(np.std(v)) for v in vals],
        }
    # the deployed model's figures, the line each budget is read against
    baseline: dict[str, dict[str, float]] = {}
    if all("baseline" in r["evaluations"] for r in per_seed.values()):
        for name in keys:
            v = seeds_of("baseline", name)
            baseline[name] = {"mean": float(np.mean(v)), "std": float(np.std(v))}
    result = {
        "strategy": strategy,
        "epochs": epochs,
        "seeds": sorted(per_seed),
        "curves": curves,
        "baseline": baseline,
    }
    write_json(out / "budget.json", result)
    lines = [
        f"# Epoch budget: {strategy}",
        "",
        f"{len(per_seed)} seed(s) {sorted(per_seed)}, mean ± std; each budget is its own run "
        "(the cosine schedule decays over the whole budget).",
        "",
        "| epochs | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for k, e in enumerate(epochs):
        cells = [str(e)] + [f"{curves[n]['mean'][k]:.3f} ± {curves[n]['std'][k]:.3f}" for n in keys]
        lines.append("| " + " | ".join(cells) + " |")
    if baseline:
        cells = ["baseline"] + [
            f"{baseline[n]['mean']:.3f} ± {baseline[n]['std']:.3f}" for n in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    write_bytes(out / "budget.md", ("\n".join(lines) + "\n").encode())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, lvl in zip(axes, ("defect", "cell"), strict=True):
        for name, c in curves.items():
            if name.startswith(lvl):
                bar = ax.errorbar(
                    epochs,
                    c["mean"],
                    yerr=c["std"],
                    marker="o",
                    capsize=3,
                    label=name.removeprefix(lvl + " "),
                )
                if name in baseline:  # dashed, same colour: the baseline's figure
                    ax.axhline(baseline[name]["mean"], ls="--", lw=1, color=bar[0].get_color())
        ax.set(xscale="log", xlabel="epochs", title=f"{strategy}, {lvl} level", ylim=(0, 1.02))
        ax.set_xticks(epochs, [str(e) for e in epochs])
        ax.minorticks_off()  # the log axis's own minor labels overlap the budgets
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="dashed: baseline" if baseline else None, title_fontsize=8)
    _save(fig, out / "plots" / "budget.png")
    return result
