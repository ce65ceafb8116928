"""Data validation with great-expectations: manifest, ingested batches, acquisition drift,
operator feedback and evaluation metrics.

A suite validates a few pandas frames built from the project's files, one great-expectations
asset and expectation suite per frame:

- **manifest** suite: ``manifest`` (the rows of :func:`~mentoring.data.manifest.read_manifest`
  plus a derived ``defective`` column, 1 when ``defect_classes`` is not empty, whose mean per
  domain is the defect rate), ``manifest_classes`` (one row per image and defect class) and
  ``manifest_sources`` (one row per distinct source object: its ``source_sha256`` and
  ``source_uri``);
- **batch** suite (the rows one ``mentoring ingest`` run added, :func:`validate_ingested`): the
  same row checks as the manifest's on ``batch`` and ``batch_classes``, the keys (``image_id``;
  ``sha256`` within a domain and split) on ``batch_keys`` (the manifest with the batch), and
  ``batch_sources``;
- **acquisition_drift** suite: one frame per compared batch (``drift <domain>/<split>``), one row
  per image with its brightness, contrast and sharpness (:mod:`mentoring.data.stats`); each
  statistic's 10th, 50th and 90th percentiles must lie in the reference's (``validate.
  drift_reference``, original/train) same percentile +- ``validate.drift_tolerance`` x the
  reference's 10-90 percentile range (:func:`drift_band`);
- **feedback** suite: ``feedback`` (one row per area verdict of each feedback file; an item
  without area verdict gives one row with a null area) and ``feedback_cells`` (one row per grid
  cell of each area the feedback references that the tasks contain);
- **metrics** suite: ``metrics`` (one row per rate of an evaluation's ``metrics.json``: per
  domain, overall and per class), every value in [0, 1], none NaN.

Each expectation has a great-expectations ``severity``: a *critical* one that fails makes the
suite fail; a *warning* (content seen under two source keys, acquisition drift) is reported with
its figures and never fails a suite: a plant wants to know that its line drifted, and that is
when mentoring is needed, not a reason to stop.

Pydantic already checks the *form* of feedback files (``read_feedback`` raises FeedbackError
naming the file); these suites check *content*: ids that exist, values in the known sets.

A run gives a :class:`SuiteResult`: success, the failed expectations and the warnings as readable
lines with a few unexpected values and where they are, and the full great-expectations results
(JSON-able). :class:`ValidationError` is a ``ValueError`` whose message lists every failure, so
the CLI prints it as one readable error. :func:`write_data_docs` renders results as
great-expectations Data Docs (HTML).

great-expectations runs in one ephemeral context per process (nothing written to disk, no
progress bars); the first validation of a process pays its import (about 3 s).

Example:
    >>> df = read_manifest("data/manifests/line.parquet", check_files=False)  # doctest: +SKIP
    >>> result = check_manifest(params, df)  # doctest: +SKIP
    >>> result.success, [f.description for f in result.failures]  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import functools
import json
import shutil
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResultSchema,
)
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.expectations.metadata_types import FailureSeverity
from great_expectations.expectations.row_conditions import Column

from mentoring.config import Params
from mentoring.data.manifest import OPTIONAL_COLUMNS
from mentoring.data.stats import STATS, manifest_stats
from mentoring.feedback.schema import AreaVerdict, FeedbackFile, MiningTasks
from mentoring.io import write_json
from mentoring.line.generate import SPLITS

#: sha256 hex digests as the line generator writes them
SHA256_REGEX = r"^[0-9a-f]{64}$"
#: manifest columns that every row must fill
MANIFEST_REQUIRED: tuple[str, ...] = (
    "image_id",
    "path",
    "domain",
    "split",
    "width",
    "height",
    "sha256",
    "defect_classes",
)
#: verdicts of the feedback schema
VERDICTS: tuple[str, ...] = typing.get_args(AreaVerdict.model_fields["verdict"].annotation)
FEEDBACK_COLUMNS: tuple[str, ...] = ("file", "image_id", "area_id", "verdict", "corrected_class")
CELL_COLUMNS: tuple[str, ...] = ("file", "image_id", "area_id", "row", "col")
SOURCE_COLUMNS: tuple[str, ...] = ("source_sha256", "source_uri", "image_id", "domain", "split")
#: the rates of an evaluation's metrics.json (per domain) that must lie in [0, 1]
RATES: tuple[str, ...] = ("map", "precision", "recall", "f1", "false_reject_rate", "escape_rate")
#: the rates of the defect level (image-level rates are the cell level's only)
DEFECT_RATES: tuple[str, ...] = ("map", "precision", "recall", "f1")
#: the per-class rates (``ap`` is None, by design, for a class without positives)
CLASS_RATES: tuple[str, ...] = ("ap", "precision", "recall")
METRIC_COLUMNS: tuple[str, ...] = ("domain", "class", "metric", "value")
#: the percentiles of each acquisition statistic that the drift suite compares
DRIFT_QUANTILES: tuple[float, float, float] = (0.1, 0.5, 0.9)
#: per frame, the columns that say where an unexpected value is, and how many of them to show
#: beside an example (the first that are set and are not the checked column): a manifest row is
#: named by its image id, or by its path when the id is what is wrong
LOCATORS: dict[str, tuple[tuple[str, ...], int]] = {
    "manifest": (("image_id", "path"), 1),
    "manifest_classes": (("image_id",), 1),
    "manifest_sources": (("source_uri", "image_id"), 2),
    "batch": (("image_id", "path"), 1),
    "batch_classes": (("image_id",), 1),
    "batch_keys": (("image_id", "path"), 1),
    "batch_sources": (("source_uri", "image_id"), 2),
    "feedback": (("file", "image_id", "area_id"), 3),
    "feedback_cells": (("file", "area_id"), 2),
    "metrics": (("domain", "class", "metric"), 3),
}
_SOURCE = "mentoring"
#: the severity of expectations that report and never fail a suite
WARNING = FailureSeverity.WARNING


class ValidationError(ValueError):
    """Data that failed a suite; the message lists every failed expectation with examples."""

    def __init__(self, result: SuiteResult, saved: Path | None = None) -> None:
        self.result = result
        self.saved = saved
        super().__init__(result.report(saved))


@dataclass(frozen=True)
class Failure:
    """One failed expectation (or, in :attr:`SuiteResult.warnings`, one warning).

    Attributes:
        frame: the validated frame (``manifest``, ``feedback_cells``, ...).
        expectation: the great-expectations type, e.g. ``expect_column_values_to_be_unique``.
        column: the column(s) it checks (``"image_id, area_id"`` for a pair), None for a table.
        title: what is expected, in words.
        unexpected: a few unexpected values (JSON-able), or the observed value of an aggregate.
        description: one readable line with all of the above and where the examples are.
    """

    frame: str
    expectation: str
    column: str | None
    title: str
    unexpected: list[Any]
    description: str


@dataclass(frozen=True)
class SuiteResult:
    """The outcome of a suite over its frames.

    Attributes:
        suite: ``manifest``, ``batch``, ``acquisition_drift``, ``feedback`` or ``metrics``.
        success: every *critical* expectation of every frame passed (warnings do not count).
        n_expectations: expectations evaluated.
        failures: the failed critical ones, readable.
        results: frame -> the full great-expectations validation result, as a JSON-able dict.
        warnings: the failed expectations of severity ``warning`` (or ``info``), readable.
    """

    suite: str
    success: bool
    n_expectations: int
    failures: list[Failure]
    results: dict[str, dict[str, Any]]
    warnings: list[Failure] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def n_warnings(self) -> int:
        return len(self.warnings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: success, counts, readable failures and warnings, and the full results."""
        return {
            "suite": self.suite,
            "success": self.success,
            "n_expectations": self.n_expectations,
            "n_failed": self.n_failed,
            "n_warnings": self.n_warnings,
            "failures": [asdict(f) for f in self.failures],
            "warnings": [asdict(f) for f in self.warnings],
            "results": self.results,
        }

    def report(self, saved: Path | None = None) -> str:
        """A readable report: one line per failed expectation and per warning, then where the
        results are."""
        if self.success:
            head = f"{self.suite} validation passed: {self.n_expectations} expectations"
        else:
            head = (
                f"{self.suite} validation failed: {self.n_failed} of {self.n_expectations} "
                f"expectations"
            )
        if self.warnings:
            head += f", {self.n_warnings} warning(s)"
        lines = [head, *(f"  - {f.description}" for f in self.failures)]
        lines += [f"  ! warning: {w.description}" for w in self.warnings]
        if saved is not None:
            lines.append(f"full results: {saved}")
        return "\n".join(lines)


# -- frames -----------------------------------------------------------------------------------


def _with_optional(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every optional manifest column (defaults; an unset orig size is the size).

    Like :func:`~mentoring.data.manifest.with_optional_columns`, without casting: a broken
    value (a null width) is the suite's to report, not a crash here.
    """
    df = df.copy()
    for col, default in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = pd.Series([default] * len(df), index=df.index, dtype=object)
    for orig, size in (("orig_width", "width"), ("orig_height", "height")):
        values = pd.to_numeric(df[orig], errors="coerce")
        df[orig] = values.where(~(values < 0), df[size])  # NaN stays: the suite reports it
    return df


def _classes_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image and listed defect class (a healthy image, "", has none)."""
    classes = df["defect_classes"].fillna("").astype(str)
    # inside a list, an empty piece ("a,,b") is kept: the suite reports it
    listed = df.loc[classes != "", ["image_id"]].assign(
        defect_class=classes[classes != ""].str.split(",")
    )
    exploded = listed.explode("defect_class", ignore_index=True)
    return exploded[["image_id", "defect_class"]]


def _sources_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct (``source_sha256``, ``source_uri``) of ingested rows.

    The pieces of one tiled object share both and count once; the same content under two keys
    (two URIs) gives two rows with one ``source_sha256``.
    """
    df = _with_optional(df)
    ingested = df[df["source_sha256"].fillna("") != ""]
    distinct = ingested.drop_duplicates(["source_sha256", "source_uri"])
    return distinct[list(SOURCE_COLUMNS)].reset_index(drop=True)


def manifest_frames(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The frames of the manifest suite: the manifest plus ``defective``, its classes and its
    source objects.

    Args:
        df: a manifest as :func:`~mentoring.data.manifest.read_manifest` returns it (optional
            columns may be missing: they get their defaults).
    """
    manifest = _with_optional(df)
    manifest = manifest.assign(
        defective=(manifest["defect_classes"].fillna("") != "").astype("int64")
    )
    return {
        "manifest": manifest,
        "manifest_classes": _classes_frame(df),
        "manifest_sources": _sources_frame(df),
    }


def merged_rows(batch: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest with the batch's rows: a row that is in both (same ``image_id``, ``path``
    and ``sha256``) counts once, whether ``manifest`` was read before or after the batch was
    written into it; a batch row that clashes with another row stays, for the suite to report.
    """
    both = pd.concat([_with_optional(manifest), _with_optional(batch)], ignore_index=True)
    return both.drop_duplicates(["image_id", "path", "sha256"]).reset_index(drop=True)


def batch_frames(batch: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The frames of the batch suite (the rows one ingestion added).

    Args:
        batch: the rows the ingestion added (manifest columns).
        manifest: the manifest, with or without the batch's rows (see :func:`merged_rows`).

    Returns:
        ``batch`` (its rows), ``batch_classes`` (their classes), ``batch_keys`` (the manifest
        with the batch: ids and checksums are unique there, not only within the batch) and
        ``batch_sources`` (the source objects of the manifest with the batch).
    """
    if batch.empty:  # nothing ingested: `pd.DataFrame([])` has no columns at all
        batch = batch.reindex(columns=list(dict.fromkeys([*manifest.columns, *batch.columns])))
    merged = merged_rows(batch, manifest)
    return {
        "batch": _with_optional(batch),
        "batch_classes": _classes_frame(batch),
        "batch_keys": merged[["image_id", "path", "domain", "split", "sha256"]],
        "batch_sources": _sources_frame(merged),
    }


def metrics_frames(metrics: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The frame of the metrics suite: one row per rate of an evaluation's ``metrics.json``.

    Args:
        metrics: ``{"domains": {domain: area_metrics(...)}}`` as the evaluate stage writes it
            (or one domain's :func:`~mentoring.evaluation.area_metrics` dict, named ``all``).

    Returns:
        ``metrics``: columns ``domain``, ``class`` ("" for the domain's overall rates),
        ``metric`` and ``value`` (a missing rate is null). A class's ``ap`` is left out when the
        class has no positive area (None by design: AP is undefined without positives). The
        defect level (a domain's ``defect`` block, when there is one) adds the same rates named
        ``defect.<rate>``; its ``false_alarms_per_image`` is a count per image, not a rate, and
        is not checked here.
    """
    domains = metrics.get("domains", {"all": metrics})
    rows: list[dict[str, Any]] = []
    for domain, dm in domains.items():
        levels = [("", dm, "n_positive")]
        if isinstance(dm.get("defect"), Mapping):
            levels.append(("defect.", dm["defect"], "n_defects"))
        for prefix, m, n_key in levels:
            rows += [
                {"domain": domain, "class": "", "metric": prefix + k, "value": m.get(k)}
                for k in RATES
                if not prefix or k in DEFECT_RATES
            ]
            for name, per in (m.get("per_class") or {}).items():
                for k in CLASS_RATES:
                    if k == "ap" and per.get("ap") is None and not per.get(n_key):
                        continue
                    rows.append(
                        {"domain": domain, "class": name, "metric": prefix + k, "value": per.get(k)}
                    )
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    # None and NaN are both null for the suite; a value that is not a number becomes null too
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    return {"metrics": frame}


def feedback_frames(
    tasks: MiningTasks, files: Sequence[tuple[Path, FeedbackFile]]
) -> dict[str, pd.DataFrame]:
    """The frames of the feedback suite: area verdicts, and the cells of the areas they name.

    Args:
        tasks: the mining tasks the feedback answers.
        files: (path, parsed file) pairs, as ``load_feedback_files`` returns them.
    """
    areas = {(im.image_id, a.area_id): a for im in tasks.images for a in im.areas}
    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    for path, fb in files:
        for item in fb.items:
            where = {"file": path.name, "image_id": item.image_id}
            if not item.areas:  # a whole-image flag still references the image
                rows.append({**where, "area_id": None, "verdict": None, "corrected_class": None})
            for av in item.areas:
                rows.append(
                    {
                        **where,
                        "area_id": av.area_id,
                        "verdict": av.verdict,
                        "corrected_class": av.corrected_class,
                    }
                )
                area = areas.get((item.image_id, av.area_id))
                for r, c in area.cells if area else []:
                    cells.append({**where, "area_id": av.area_id, "row": r, "col": c})
    return {
        "feedback": pd.DataFrame(rows, columns=list(FEEDBACK_COLUMNS)),
        "feedback_cells": pd.DataFrame(cells, columns=list(CELL_COLUMNS)).astype(
            {"row": "int64", "col": "int64"}
        ),
    }


# -- suites -----------------------------------------------------------------------------------


def _suite(name: str, expectations: Iterable[gxe.Expectation]) -> gx.ExpectationSuite:
    # given at construction: `add_expectation` needs an active context (it checks a store)
    return gx.ExpectationSuite(name=name, expectations=list(expectations))


def _row_expectations(params: Params) -> list[gxe.Expectation]:
    """What every manifest row must be, ingested or generated: set, known, of the line's size."""
    line = params.line
    splits = sorted({split for _, split, _ in SPLITS})
    size = line.image_size
    rows: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is set on every row")
        for c in (*MANIFEST_REQUIRED, "orig_width", "orig_height")
    ]
    rows += [
        gxe.ExpectColumnValuesToBeInSet(
            column="domain", value_set=sorted(line.setups), description="domains of line.setups"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="split", value_set=splits, description="splits the line generator writes"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="width", value_set=[size], description="width is line.image_size"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="height", value_set=[size], description="height is line.image_size"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="channels", value_set=[line.channels], description="channels is line.channels"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="orig_width", min_value=1, description="the camera image's width is > 0"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="orig_height", min_value=1, description="the camera image's height is > 0"
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sha256", regex=SHA256_REGEX, description="sha256 is 64 lowercase hex digits"
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="mask_sha256",
            regex=r"^(?:[0-9a-f]{64})?$",
            description="mask_sha256 is empty or 64 lowercase hex digits",
        ),
    ]
    return rows


def _key_expectations() -> list[gxe.Expectation]:
    """Keys: one row per image id, one image content per (domain, split)."""
    return [
        gxe.ExpectColumnValuesToBeUnique(column="image_id", description="image ids are unique"),
        # a warning: identical pictures are legitimate (a copy under two names, blank tiles,
        # two cameras on an empty fixture); both rows are kept, the ids stay distinct
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["domain", "split", "sha256"],
            severity=WARNING,
            description="no image content twice in a domain and split (sha256)",
        ),
    ]


def _class_expectations(params: Params) -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column="defect_class",
            value_set=list(params.line.classes),
            description="defect classes of line.classes",
        )
    ]


def _source_expectations() -> list[gxe.Expectation]:
    """A warning: the same camera content under two source keys (a copy, a re-upload...)."""
    return [
        gxe.ExpectColumnValuesToBeUnique(
            column="source_sha256",
            severity=WARNING,
            description="each source content (source_sha256) comes from one source key",
        )
    ]


def manifest_suites(params: Params) -> dict[str, gx.ExpectationSuite]:
    """Expectations of the manifest frames (see :func:`manifest_frames`)."""
    rows = [*_row_expectations(params), *_key_expectations()]
    for domain in sorted(params.line.setups):
        low, high = params.validate.defect_band(domain)
        rows.append(
            gxe.ExpectColumnMeanToBeBetween(
                column="defective",
                min_value=low,
                max_value=high,
                row_condition=Column("domain") == domain,
                description=f"defect rate of domain {domain!r} in [{low}, {high}]",
            )
        )
    return {
        "manifest": _suite("manifest", rows),
        "manifest_classes": _suite("manifest_classes", _class_expectations(params)),
        "manifest_sources": _suite("manifest_sources", _source_expectations()),
    }


def batch_suites(params: Params) -> dict[str, gx.ExpectationSuite]:
    """Expectations of the batch frames (see :func:`batch_frames`): the manifest's row, class,
    key and source checks; no defect rate (a day's batch is too small to say, and an unlabelled
    pool has none)."""
    return {
        "batch": _suite("batch", _row_expectations(params)),
        "batch_classes": _suite("batch_classes", _class_expectations(params)),
        "batch_keys": _suite("batch_keys", _key_expectations()),
        "batch_sources": _suite("batch_sources", _source_expectations()),
    }


def metrics_suites() -> dict[str, gx.ExpectationSuite]:
    """Expectations of the metrics frame (see :func:`metrics_frames`): rates in [0, 1], no NaN."""
    rows = [
        gxe.ExpectColumnValuesToNotBeNull(
            column="value", description="every rate is a number (no NaN, no missing rate)"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="value", min_value=0, max_value=1, description="every rate is in [0, 1]"
        ),
    ]
    return {"metrics": _suite("metrics", rows)}


def drift_band(reference: pd.DataFrame, tolerance: float) -> dict[str, dict[str, float]]:
    """The drift band of each acquisition statistic, from the reference images' statistics.

    For a statistic with reference percentiles p10, p50, p90 the band half-width is
    ``w = tolerance x (p90 - p10)``, and a batch's percentile q must lie in [q_ref - w, q_ref + w]:
    a batch of the reference's distribution stays inside (its percentiles only move by sampling
    noise, a small fraction of the 10-90 range), a shifted or rescaled one leaves it.

    Args:
        reference: :func:`~mentoring.data.stats.manifest_stats` of the reference images.
        tolerance: ``validate.drift_tolerance``.

    Returns:
        statistic -> ``{"p10", "p50", "p90", "half_width"}``; percentiles interpolate linearly
        (as great-expectations is told to).
    """
    band: dict[str, dict[str, float]] = {}
    for stat in STATS:
        q = reference[stat].quantile(list(DRIFT_QUANTILES), interpolation="linear").to_numpy()
        named = {f"p{round(p * 100)}": float(v) for p, v in zip(DRIFT_QUANTILES, q, strict=True)}
        band[stat] = {**named, "half_width": float(tolerance * (q[-1] - q[0]))}
    return band


def drift_suite(
    name: str, band: Mapping[str, Mapping[str, float]], reference: str
) -> gx.ExpectationSuite:
    """Warning expectations of one batch's acquisition statistics (see :func:`drift_band`).

    Per statistic: its median (``expect_column_median_to_be_between``) and its 10th and 90th
    percentiles (``expect_column_quantile_values_to_be_between``) within the band.
    """
    rows: list[gxe.Expectation] = []
    for stat, b in band.items():
        w = b["half_width"]
        low, high = b["p50"] - w, b["p50"] + w
        meta = {"reference": reference, "band": dict(b)}
        rows.append(
            gxe.ExpectColumnMedianToBeBetween(
                column=stat,
                min_value=low,
                max_value=high,
                severity=WARNING,
                meta=meta,
                description=(
                    f"{stat} median in [{low:.4g}, {high:.4g}] ({reference} median "
                    f"{b['p50']:.4g} +- {w:.3g})"
                ),
            )
        )
        outer = [(p, b[f"p{round(p * 100)}"]) for p in DRIFT_QUANTILES if p != 0.5]
        rows.append(
            gxe.ExpectColumnQuantileValuesToBeBetween(
                column=stat,
                quantile_ranges={
                    "quantiles": [p for p, _ in outer],
                    "value_ranges": [[v - w, v + w] for _, v in outer],
                },
                allow_relative_error="linear",
                severity=WARNING,
                meta=meta,
                description=f"{stat} "
                + ", ".join(
                    f"p{round(p * 100)} in [{v - w:.4g}, {v + w:.4g}] ({reference} {v:.4g})"
                    for p, v in outer
                ),
            )
        )
    return _suite(name, rows)


def feedback_suites(
    tasks: MiningTasks, manifest_ids: Iterable[str], frames: Mapping[str, pd.DataFrame]
) -> dict[str, gx.ExpectationSuite]:
    """Expectations of the feedback frames (see :func:`feedback_frames`).

    The sets of known ids are cut to the ids the frames reference: the same outcome as the whole
    sets, and saved results that stay small on a large line.
    """
    fb = frames["feedback"]
    referenced = set(fb["image_id"].dropna())
    task_ids = {im.image_id for im in tasks.images}
    pairs = {(im.image_id, a.area_id) for im in tasks.images for a in im.areas}
    used_pairs = set(zip(fb["image_id"], fb["area_id"], strict=True))
    cut = {"value_set": "the known ids that the feedback references (the rest cannot matter)"}
    gh, gw = tasks.grid
    rows: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column="image_id", description="image ids are set"),
        gxe.ExpectColumnValuesToBeInSet(
            column="verdict", value_set=list(VERDICTS), description="verdicts are known"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="image_id",
            value_set=sorted(referenced & task_ids),
            description="images are in the mining tasks",
            meta=cut,
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="image_id",
            value_set=sorted(referenced & set(manifest_ids)),
            description="images are in the manifest",
            meta=cut,
        ),
        gxe.ExpectColumnPairValuesToBeInSet(
            column_A="image_id",
            column_B="area_id",
            value_pairs_set=sorted(used_pairs & pairs),
            ignore_row_if="either_value_is_missing",
            description="areas are areas of that image in the mining tasks",
            meta={"value_pairs_set": cut["value_set"]},
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="corrected_class",
            value_set=list(tasks.classes),
            description="corrected classes are classes of the tasks",
        ),
    ]
    cells = [
        gxe.ExpectColumnValuesToBeBetween(
            column="row", min_value=0, max_value=gh - 1, description=f"cell rows in [0, {gh - 1}]"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="col", min_value=0, max_value=gw - 1, description=f"cell cols in [0, {gw - 1}]"
        ),
    ]
    return {"feedback": _suite("feedback", rows), "feedback_cells": _suite("feedback_cells", cells)}


# -- running ----------------------------------------------------------------------------------


@functools.cache
def _context() -> Any:
    """The process's ephemeral great-expectations context, with one pandas data source."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.data_sources.add_pandas(_SOURCE)
    return context


def _batch_definition(asset_name: str) -> Any:
    source = _context().data_sources.get(_SOURCE)
    try:
        return source.get_asset(asset_name).get_batch_definition("whole")
    except LookupError:
        return source.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("whole")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _short(value)


def _jsonable(value: Any) -> Any:
    """``json.dumps`` default: numpy scalars as their Python value (a numpy bool must stay a
    bool: ``str`` would make ``False`` the truthy string "False"), anything else as text."""
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _describe(frame: str, res: dict[str, Any], max_examples: int, shown: int) -> Failure:
    """A readable failure from one great-expectations result (its JSON dict)."""
    config = res["expectation_config"]
    kwargs = config["kwargs"]
    etype = config["type"]
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    cols += list(kwargs.get("column_list") or [])
    column = ", ".join(cols) or None
    title = config.get("description") or etype
    on = column or "table"
    cond = kwargs.get("row_condition")
    if isinstance(cond, dict) and cond.get("type") == "comparison":
        on += f" where {cond['column']['name']} {cond['operator']} {cond['parameter']!r}"
    elif cond:
        on += f" where {cond}"
    head = f"[{frame}] {title} ({etype} on {on})"
    result = res.get("result") or {}
    exc = res.get("exception_info") or {}
    raised = [exc] if "raised_exception" in exc else list(exc.values())
    errors = [e.get("exception_message") for e in raised if e.get("raised_exception")]
    if errors:
        return Failure(frame, etype, column, title, [], f"{head}: could not run: {errors[0]}")
    if "unexpected_count" not in result:  # an aggregate: mean, row count, ...
        observed = result.get("observed_value")
        seen = "no rows" if observed is None else _short(observed)
        if isinstance(observed, dict) and {"quantiles", "values"} <= observed.keys():
            seen = ", ".join(
                f"p{round(q * 100)} {_number(v)}"
                for q, v in zip(observed["quantiles"], observed["values"], strict=True)
            )
        return Failure(frame, etype, column, title, [observed], f"{head}: observed {seen}")
    values = list(result.get("partial_unexpected_list") or [])[:max_examples]
    where = list(result.get("partial_unexpected_index_list") or [])[:max_examples]
    examples = []
    for i, value in enumerate(values):
        at = where[i] if i < len(where) and isinstance(where[i], dict) else {}
        named = [f"{k}={v}" for k, v in at.items() if k not in cols and v is not None]
        loc = ", ".join(named[:shown])
        examples.append(_short(value) + (f" ({loc})" if loc else ""))
    count = f"{result['unexpected_count']} of {result.get('element_count', '?')} rows unexpected"
    text = f"{head}: {count}" + (", e.g. " + "; ".join(examples) if examples else "")
    return Failure(frame, etype, column, title, values, text)


def run_suites(
    name: str,
    frames: Mapping[str, pd.DataFrame],
    suites: Mapping[str, gx.ExpectationSuite],
    max_examples: int = 5,
) -> SuiteResult:
    """Validate each frame with its suite; gather a :class:`SuiteResult`.

    Args:
        name: the suite's name in reports (``manifest``, ``feedback``).
        frames: frame name -> data; each name is a great-expectations asset.
        suites: frame name -> its expectations.
        max_examples: unexpected values kept per failed expectation.
    """
    results: dict[str, dict[str, Any]] = {}
    failures: list[Failure] = []
    warnings: list[Failure] = []
    evaluated = 0
    for frame, suite in suites.items():
        locators, shown = LOCATORS.get(frame, ((), 0))
        index = [c for c in locators if c in frames[frame].columns]
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": max_examples,
        }
        if index:
            result_format["unexpected_index_column_names"] = index
        batch = _batch_definition(frame).get_batch(batch_parameters={"dataframe": frames[frame]})
        out = batch.validate(suite, result_format=result_format)
        # through JSON: numpy scalars in the results become plain numbers and bools
        data = json.loads(json.dumps(out.to_json_dict(), default=_jsonable))
        results[frame] = data
        evaluated += int(data["statistics"]["evaluated_expectations"])
        for r in data["results"]:
            if r["success"] is not True:
                critical = r["expectation_config"].get("severity", "critical") == "critical"
                (failures if critical else warnings).append(
                    _describe(frame, r, max_examples, shown)
                )
    return SuiteResult(name, not failures, evaluated, failures, results, warnings)


def check_manifest(params: Params, df: pd.DataFrame) -> SuiteResult:
    """Run the manifest suite on a manifest frame (``read_manifest(..., check_files=False)``)."""
    return run_suites(
        "manifest", manifest_frames(df), manifest_suites(params), params.validate.max_examples
    )


def check_batch(params: Params, batch: pd.DataFrame, manifest: pd.DataFrame) -> SuiteResult:
    """Run the batch suite on the rows one ingestion added (see :func:`batch_frames`)."""
    return run_suites(
        "batch", batch_frames(batch, manifest), batch_suites(params), params.validate.max_examples
    )


def check_metrics(params: Params, metrics: Mapping[str, Any]) -> SuiteResult:
    """Run the metrics suite on an evaluation's metrics (see :func:`metrics_frames`)."""
    return run_suites(
        "metrics", metrics_frames(metrics), metrics_suites(), params.validate.max_examples
    )


def validate_metrics(params: Params, metrics: Mapping[str, Any], out_json: Path) -> SuiteResult:
    """Run the metrics suite, write its full results to ``out_json``, raise if anything failed.

    Args:
        params: ``validate.max_examples`` is read.
        metrics: an evaluation's metrics, as the evaluate stage writes ``metrics.json``.
        out_json: where the results go (written atomically, pass or fail).

    Raises:
        ValidationError: listing every rate that is NaN, missing or outside [0, 1].
    """
    result = check_metrics(params, metrics)
    write_json(out_json, result.to_dict())
    if not result.success:
        raise ValidationError(result, out_json)
    return result


def check_feedback(
    params: Params,
    tasks: MiningTasks,
    feedback_files: Sequence[tuple[Path, FeedbackFile]],
    manifest_ids: Iterable[str],
) -> SuiteResult:
    """Run the feedback suite on parsed feedback files (see :func:`feedback_frames`)."""
    frames = feedback_frames(tasks, feedback_files)
    suites = feedback_suites(tasks, manifest_ids, frames)
    return run_suites("feedback", frames, suites, params.validate.max_examples)


def validate_feedback(
    params: Params,
    tasks: MiningTasks,
    feedback_files: Sequence[tuple[Path, FeedbackFile]],
    manifest_ids: Iterable[str],
    out_json: Path,
) -> SuiteResult:
    """Run the feedback suite, write its full results to ``out_json``, raise if anything failed.

    Args:
        params: ``validate.max_examples`` is read.
        tasks: the mining tasks the feedback answers.
        feedback_files: (path, parsed file) pairs, as ``load_feedback_files`` returns them.
        manifest_ids: every image id of the manifest.
        out_json: where the results go (written atomically, pass or fail).

    Raises:
        ValidationError: listing every failed expectation with examples, and ``out_json``.
    """
    result = check_feedback(params, tasks, feedback_files, manifest_ids)
    write_json(out_json, result.to_dict())
    if not result.success:
        raise ValidationError(result, out_json)
    return result


# -- acquisition drift ------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReport:
    """Acquisition drift of batches (a domain/split each) from the reference images.

    Attributes:
        reference: ``<domain>/<split>`` (``validate.drift_reference``).
        n_reference: images of the reference.
        tolerance: ``validate.drift_tolerance``.
        band: statistic -> the reference's ``p10``, ``p50``, ``p90`` and the band's
            ``half_width`` (:func:`drift_band`); empty when skipped.
        batches: ``<domain>/<split>`` -> ``n_images``, ``drifted`` and, per statistic,
            ``drifted`` and per percentile (``p10``, ``p50``, ``p90``) the ``reference`` value,
            the ``allowed`` range, the ``batch`` value and ``within``: the figures of the
            great-expectations results.
        result: the ``acquisition_drift`` suite's result (warnings only), None when skipped.
        skipped: why nothing was compared ("" when it was).
    """

    reference: str
    n_reference: int
    tolerance: float
    band: dict[str, dict[str, float]]
    batches: dict[str, dict[str, Any]]
    result: SuiteResult | None
    skipped: str = ""

    @classmethod
    def not_measured(cls, params: Params, why: str) -> DriftReport:
        """A report that compared nothing, saying ``why``."""
        cfg = params.validate
        return cls(cfg.drift_reference, 0, cfg.drift_tolerance, {}, {}, None, why)

    @property
    def drifted(self) -> list[str]:
        """The batches with at least one percentile outside its band."""
        return [name for name, b in self.batches.items() if b["drifted"]]

    def summary(self) -> str:
        """Per drifted batch, a line, then one per drifted statistic: each percentile outside
        its band, with the band."""
        if self.skipped:
            return f"acquisition drift not measured: {self.skipped}"
        if not self.drifted:
            return (
                f"no acquisition drift from {self.reference} (tolerance {self.tolerance}) in "
                + (", ".join(self.batches) or "no batch")
            )
        lines = []
        for name in self.drifted:
            b = self.batches[name]
            lines.append(
                f"acquisition drift: {name} ({b['n_images']} images) differs from "
                f"{self.reference} ({self.n_reference} images, tolerance {self.tolerance}):"
            )
            for stat, s in b["statistics"].items():
                outside = [
                    f"{p} {_number(v['batch'])} not in "
                    f"[{_number(v['allowed'][0])}, {_number(v['allowed'][1])}]"
                    for p, v in s["percentiles"].items()
                    if not v["within"]
                ]
                if outside:
                    lines.append(f"  {stat}: " + ", ".join(outside))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the figures, the drifted batches and the full great-expectations results."""
        return {
            "reference": self.reference,
            "n_reference": self.n_reference,
            "tolerance": self.tolerance,
            "skipped": self.skipped,
            "band": self.band,
            "drifted": self.drifted,
            "batches": self.batches,
            "summary": self.summary(),
            "suite": self.result.to_dict() if self.result is not None else None,
        }


def _figures(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per statistic, per percentile: reference, allowed range, batch value, within (from one
    frame's great-expectations results of :func:`drift_suite`)."""
    out: dict[str, dict[str, Any]] = {}
    for r in result["results"]:
        config = r["expectation_config"]
        kwargs, band = config["kwargs"], (config.get("meta") or {}).get("band", {})
        observed = (r.get("result") or {}).get("observed_value")
        if config["type"] == "expect_column_median_to_be_between":
            ranges = [(0.5, [kwargs["min_value"], kwargs["max_value"]])]
            values = [observed]
        else:
            q = kwargs["quantile_ranges"]
            ranges = list(zip(q["quantiles"], q["value_ranges"], strict=True))
            values = (observed or {}).get("values") or [None] * len(ranges)
        stat = out.setdefault(kwargs["column"], {"drifted": False, "percentiles": {}})
        for (p, allowed), value in zip(ranges, values, strict=True):
            name = f"p{round(p * 100)}"
            within = value is not None and allowed[0] <= value <= allowed[1]
            stat["percentiles"][name] = {
                "reference": band.get(name),
                "allowed": allowed,
                "batch": value,
                "within": within,
            }
            stat["drifted"] = stat["drifted"] or not within
    for stat in out.values():  # p10, p50, p90 in order
        stat["percentiles"] = dict(
            sorted(stat["percentiles"].items(), key=lambda kv: int(kv[0][1:]))
        )
    return out


def check_drift(
    params: Params, reference: pd.DataFrame, batches: Mapping[str, pd.DataFrame]
) -> DriftReport:
    """Compare each batch's acquisition statistics with the reference's (warnings only).

    Args:
        params: ``validate`` (``drift_reference``, ``drift_tolerance``, ``max_examples``).
        reference: :func:`~mentoring.data.stats.manifest_stats` of the reference images.
        batches: ``<domain>/<split>`` -> the statistics of that batch's images.
    """
    cfg = params.validate
    name, tolerance = cfg.drift_reference, cfg.drift_tolerance
    batches = {b: stats for b, stats in batches.items() if len(stats)}
    if reference.empty:
        return DriftReport.not_measured(
            params, f"no image in the reference {name} (drift_reference)"
        )
    if not batches:
        return DriftReport.not_measured(params, "no batch to compare")
    band = drift_band(reference, tolerance)
    frames = {f"drift {b}": stats for b, stats in batches.items()}
    suites = {
        frame: drift_suite(f"acquisition_drift {b}", band, name)
        for frame, b in zip(frames, batches, strict=True)
    }
    result = run_suites("acquisition_drift", frames, suites, cfg.max_examples)
    figures = {}
    for b, stats in batches.items():
        per_stat = _figures(result.results[f"drift {b}"])
        figures[b] = {
            "n_images": len(stats),
            "drifted": any(s["drifted"] for s in per_stat.values()),
            "statistics": per_stat,
        }
    return DriftReport(name, len(reference), tolerance, band, figures, result)


def _key(domain: Any, split: Any) -> str:
    return f"{domain}/{split}"


def manifest_drift(params: Params, df: pd.DataFrame, root: Path) -> DriftReport:
    """Acquisition drift of every (domain, split) of a manifest from the reference.

    The statistics of all images are computed in one pass, ``validate.stats_batch_size`` images
    at a time (:func:`~mentoring.data.stats.manifest_stats`).

    Raises:
        ImageError: an image cannot be read.
    """
    stats = manifest_stats(df, root, params.line.channels, params.validate.stats_batch_size)
    groups = {_key(d, s): g for (d, s), g in stats.groupby(["domain", "split"], sort=True)}
    reference = groups.pop(params.validate.drift_reference, stats.iloc[:0])
    return check_drift(params, reference, groups)


def ingested_drift(
    params: Params, batch: pd.DataFrame, manifest: pd.DataFrame, root: Path
) -> DriftReport:
    """Acquisition drift of a batch's rows (per domain/split) from the manifest's reference.

    The reference is the reference split of the manifest with the batch (:func:`merged_rows`):
    a batch of the reference split is compared with the reference it now belongs to.

    Raises:
        ImageError: an image cannot be read.
    """
    if batch.empty:
        return DriftReport.not_measured(params, "no image ingested")
    domain, split = params.validate.reference
    merged = merged_rows(batch, manifest)
    ref_rows = merged[(merged["domain"] == domain) & (merged["split"] == split)]
    # each image read once: the reference's and the batch's, which may overlap
    rows = pd.concat([ref_rows, batch], ignore_index=True).drop_duplicates("image_id")
    stats = manifest_stats(rows, root, params.line.channels, params.validate.stats_batch_size)
    by_id = stats.set_index("image_id")
    reference = by_id.loc[list(ref_rows["image_id"])].reset_index()
    batches = {
        _key(d, s): by_id.loc[list(g["image_id"])].reset_index()
        for (d, s), g in batch.groupby(["domain", "split"], sort=True)
    }
    return check_drift(params, reference, batches)


# -- results ----------------------------------------------------------------------------------


def _page_name(frame: str) -> str:
    """A frame name as a Data Docs page name (a file name: no '/' or spaces)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in frame)


def write_data_docs(results: Iterable[SuiteResult], out_dir: Path) -> Path:
    """Render suite results as great-expectations Data Docs (static HTML) in ``out_dir``.

    A fresh ephemeral context holds only these results in its (in-memory) validation results
    store, with one filesystem Data Docs site at ``out_dir`` (replaced, so the site shows
    exactly this run); :meth:`build_data_docs` renders one page per validated frame and an
    index. The results go through their JSON form: that is what great-expectations' store
    serialises, and numpy values in a live result would not serialise.

    Returns:
        ``out_dir / "index.html"``.
    """
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # only this site: an ephemeral context's default one would be built in a temporary folder
    context.variables.data_docs_sites = {
        "mentoring": {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(out_dir.resolve()),
            },
            "site_index_builder": {
                "class_name": "DefaultSiteIndexBuilder",
                "show_how_to_buttons": False,
            },
        }
    }
    schema = ExpectationSuiteValidationResultSchema()
    run_time = datetime.datetime.now(datetime.UTC)
    for result in results:
        run_id = RunIdentifier(run_name=result.suite, run_time=run_time)
        for frame, data in result.results.items():
            validation = schema.load(data)
            validation.meta["run_id"] = run_id
            validation.meta["validation_time"] = run_time
            key = ValidationResultIdentifier(
                ExpectationSuiteIdentifier(name=result.suite), run_id, _page_name(frame)
            )
            context.validation_results_store.set(key, validation)
    context.build_data_docs(site_names=["mentoring"])
    return out_dir / "index.html"


def validate_ingested(
    batch_df: pd.DataFrame,
    manifest_df: pd.DataFrame,
    data_root: Path,
    params: Params,
    out_dir: Path,
) -> dict[str, Any]:
    """Validate the rows one ``mentoring ingest`` run added: the batch and drift suites.

    The contract with the ingestion command (which calls it once, at the end of a run):

    - ``batch_df``: the manifest rows this run added (the manifest's columns; optional columns
      may be missing). Empty (even without columns) when nothing was ingested: the suites then
      pass, and no drift is measured.
    - ``manifest_df``: the manifest, read before *or* after the batch was written into it: a
      row in both (same ``image_id``, ``path`` and ``sha256``) counts once.
    - ``data_root``: the folder the rows' ``path`` are relative to (holds ``line/``).
    - ``params``: ``line`` (image size, channels, classes, setups) and ``validate``.
    - ``out_dir``: written (atomically per file; ``data_docs/`` replaced): ``batch.json`` (the
      batch suite's full results), ``drift.json`` (:meth:`DriftReport.to_dict`: figures per
      domain/split and statistic), ``data_docs/index.html`` (great-expectations Data Docs of
      both) and ``summary.json`` (the returned dict).

    Checks: each row set and known (domain, split, width == height == line.image_size,
    channels == line.channels, orig_width/orig_height > 0, sha256 form, classes of
    line.classes); ``image_id`` unique over the manifest with the batch; warnings: the
    same ``sha256`` twice within a (domain, split), the same ``source_sha256`` under two source
    URIs, and
    acquisition drift of the batch's images from ``validate.drift_reference`` (measured only
    when no critical expectation failed).

    It never raises for failed expectations, the rows being already written: the caller prints
    ``report`` and exits non-zero when ``success`` is false; warnings never make it false.

    Returns:
        ``success`` (no critical failure), ``n_images``, ``n_expectations``, ``n_failed``,
        ``n_warnings``, ``failures`` and ``warnings`` (readable lines), ``drifted``
        (``<domain>/<split>`` -> bool), ``report`` (all of it as text) and ``files`` (name ->
        path of what was written).

    Raises:
        ImageError: an image of the batch or of the reference cannot be read.
    """
    batch = check_batch(params, batch_df, manifest_df)
    if batch.success:
        drift = ingested_drift(params, batch_df, manifest_df, data_root)
    else:
        drift = DriftReport.not_measured(params, "the batch failed its suite")
    files = {
        "batch": out_dir / "batch.json",
        "drift": out_dir / "drift.json",
        "data_docs": out_dir / "data_docs" / "index.html",
        "summary": out_dir / "summary.json",
    }
    write_json(files["batch"], batch.to_dict())
    write_json(files["drift"], drift.to_dict())
    suites = [batch, *([drift.result] if drift.result is not None else [])]
    write_data_docs(suites, files["data_docs"].parent)
    warnings = [*batch.warnings, *(drift.result.warnings if drift.result else [])]
    report = batch.report(files["batch"])
    summary = {
        "success": batch.success,
        "n_images": len(batch_df),
        "n_expectations": sum(s.n_expectations for s in suites),
        "n_failed": batch.n_failed,
        "n_warnings": len(warnings),
        "failures": [f.description for f in batch.failures],
        "warnings": [w.description for w in warnings],
        "drifted": {name: b["drifted"] for name, b in drift.batches.items()},
        "report": f"{report}\n{drift.summary()}",
        "files": {k: str(v) for k, v in files.items()},
    }
    write_json(files["summary"], summary)
    return summary
