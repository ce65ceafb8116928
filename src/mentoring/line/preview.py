"""Contact sheet of a line: images of every domain with their defects outlined per class."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from mentoring.data.manifest import data_root, read_manifest
from mentoring.io import write_with

#: one colour per defect class (tab10 without gray), shared by every plot of the project.
CLASS_COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#e377c2", "#bcbd22")


def contact_sheet(
    manifest_path: str | Path,
    out_path: str | Path,
    classes: tuple[str, ...],
    per_domain: int = 12,
    seed: int = 0,
) -> Path:
    """Write a PNG grid: one row block per domain, defective and healthy images mixed 2:1.

    Args:
        manifest_path: the line manifest.
        out_path: the PNG to write.
        classes: class names in mask-index order (for the legend and colours).
        per_domain: images shown per domain.
        seed: which images are picked.
    """
    df = read_manifest(manifest_path)
    root = data_root(manifest_path)
    rng = np.random.default_rng(seed)
    domains = list(dict.fromkeys(df["domain"]))
    cols = 6
    rows_per = int(np.ceil(per_domain / cols))
    fig, axes = plt.subplots(
        rows_per * len(domains),
        cols,
        figsize=(cols * 2.0, rows_per * len(domains) * 2.15),
        squeeze=False,
    )
    for d, domain in enumerate(domains):
        sub = df[df["domain"] == domain]
        bad = sub[sub["defect_classes"] != ""]
        good = sub[sub["defect_classes"] == ""]
        n_bad = min(len(bad), round(per_domain * 2 / 3))
        picked = pd.concat(
            [
                bad.iloc[rng.permutation(len(bad))[:n_bad]],
                good.iloc[rng.permutation(len(good))[: per_domain - n_bad]],
            ]
        )
        for k in range(rows_per * cols):
            ax = axes[d * rows_per + k // cols, k % cols]
            ax.set_axis_off()
            if k >= len(picked):
                continue
            row = picked.iloc[k]
            img = np.asarray(Image.open(root / row["path"]))
            mask = (  # an ingested unlabelled pool has no masks
                np.asarray(Image.open(root / row["mask_path"]))
                if row["mask_path"]
                else np.zeros(img.shape[:2], np.uint8)
            )
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            for c in range(1, len(classes) + 1):
                if (mask == c).any():
                    ax.contour(
                        mask == c, levels=[0.5], colors=[CLASS_COLORS[(c - 1) % 7]], linewidths=0.9
                    )
            label = row["defect_classes"] or ("healthy" if row["mask_path"] else "unlabelled")
            ax.set_title(f"{domain} · {label}", fontsize=7)
    handles = [
        plt.Line2D([], [], color=CLASS_COLORS[i % 7], label=c) for i, c in enumerate(classes)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(classes), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out = Path(out_path)
    write_with(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out
