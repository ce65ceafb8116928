"""Saving and loading a trained segmenter with what is needed to rebuild and use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mentoring.io import write_with
from mentoring.models.segmenter import Segmenter


def save_model(
    path: str | Path,
    model: Segmenter,
    arch: dict[str, Any],
    classes: tuple[str, ...],
    meta: dict[str, Any] | None = None,
) -> None:
    """Atomically save weights, architecture arguments, class names and free-form metadata."""
    blob = {
        "arch": arch,
        "classes": list(classes),
        "state_dict": model.state_dict(),
        "meta": meta or {},
    }
    write_with(path, lambda tmp: torch.save(blob, tmp))


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of a state dict holding a NaN or an infinity."""
    return [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def load_model(path: str | Path, device: str = "cpu") -> tuple[Segmenter, dict[str, Any]]:
    """Rebuild a saved segmenter in eval mode; return it and its saved record (sans weights)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise ValueError(f"{path}: cannot load model ({exc})") from exc
    if not isinstance(blob, dict) or not {"arch", "state_dict", "classes"} <= set(blob):
        raise ValueError(
            f"{path}: not a mentoring model file (expected arch, classes and "
            f"state_dict; see mentoring.models.store.save_model)"
        )
    bad = non_finite(blob["state_dict"]) if isinstance(blob["state_dict"], dict) else []
    if bad:  # a diverged training: its predictions are NaN, no metric or gate may use them
        raise ValueError(
            f"{path}: weights {bad[:5]} hold NaN or infinite values (a diverged training); "
            f"this model cannot be evaluated, promoted or used: retrain it with a lower lr"
        )
    try:
        model = Segmenter(**blob["arch"])
        model.load_state_dict(blob["state_dict"])
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path}: weights do not match the saved architecture ({exc})") from exc
    model.to(device).eval()
    record = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, record
