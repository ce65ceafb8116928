"""Data validation with great-expectations: suites of the image manifest and operator feedback.

A suite validates a few pandas frames built from the project's files, one great-expectations
asset and expectation suite per frame:

- **manifest** suite: ``manifest`` (the rows of :func:`~mentoring.data.manifest.read_manifest`
  plus a derived ``defective`` column, 1 when ``defect_classes`` is not empty, whose mean per
  domain is the defect rate) and ``manifest_classes`` (one row per image and defect class);
- **feedback** suite: ``feedback`` (one row per area verdict of each feedback file; an item
  without area verdict gives one row with a null area) and ``feedback_cells`` (one row per grid
  cell of each area the feedback references that the tasks contain).

Pydantic already checks the *form* of feedback files (``read_feedback`` raises FeedbackError
naming the file); these suites check *content*: ids that exist, values in the known sets.

A run gives a :class:`SuiteResult`: success, the failed expectations as readable lines with a
few unexpected values and where they are, and the full great-expectations results (JSON-able).
:class:`ValidationError` is a ``ValueError`` whose message lists every failure, so the CLI prints
it as one readable error.

great-expectations runs in one ephemeral context per process (nothing written to disk, no
progress bars); the first validation of a process pays its import (about 3 s).

Example:
    >>> df = read_manifest("data/manifests/line.parquet", check_files=False)  # doctest: +SKIP
    >>> result = check_manifest(params, df)  # doctest: +SKIP
    >>> result.success, [f.description for f in result.failures]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.row_conditions import Column

from mentoring.config import Params
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
#: per frame, the columns that say where an unexpected value is, and how many of them to show
#: beside an example (the first that are set and are not the checked column): a manifest row is
#: named by its image id, or by its path when the id is what is wrong
LOCATORS: dict[str, tuple[tuple[str, ...], int]] = {
    "manifest": (("image_id", "path"), 1),
    "manifest_classes": (("image_id",), 1),
    "feedback": (("file", "image_id", "area_id"), 3),
    "feedback_cells": (("file", "area_id"), 2),
}
_SOURCE = "mentoring"


class ValidationError(ValueError):
    """Data that failed a suite; the message lists every failed expectation with examples."""

    def __init__(self, result: SuiteResult, saved: Path | None = None) -> None:
        self.result = result
        self.saved = saved
        super().__init__(result.report(saved))


@dataclass(frozen=True)
class Failure:
    """One failed expectation.

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
        suite: ``manifest`` or ``feedback``.
        success: every expectation of every frame passed.
        n_expectations: expectations evaluated.
        failures: the failed ones, readable.
        results: frame -> the full great-expectations validation result, as a JSON-able dict.
    """

    suite: str
    success: bool
    n_expectations: int
    failures: list[Failure]
    results: dict[str, dict[str, Any]]

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: success, counts, readable failures and the full results."""
        return {
            "suite": self.suite,
            "success": self.success,
            "n_expectations": self.n_expectations,
            "n_failed": self.n_failed,
            "failures": [asdict(f) for f in self.failures],
            "results": self.results,
        }

    def report(self, saved: Path | None = None) -> str:
        """A readable report: one line per failed expectation, then where the results are."""
        if self.success:
            head = f"{self.suite} validation passed: {self.n_expectations} expectations"
        else:
            head = (
                f"{self.suite} validation failed: {self.n_failed} of {self.n_expectations} "
                f"expectations"
            )
        lines = [head, *(f"  - {f.description}" for f in self.failures)]
        if saved is not None:
            lines.append(f"full results: {saved}")
        return "\n".join(lines)


# -- frames -----------------------------------------------------------------------------------


def manifest_frames(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The frames of the manifest suite: the manifest plus ``defective``, and its classes.

    Args:
        df: a manifest as :func:`~mentoring.data.manifest.read_manifest` returns it.
    """
    classes = df["defect_classes"].fillna("")
    manifest = df.assign(defective=(classes != "").astype("int64"))
    # a healthy image ("") has no class; inside a list, an empty piece ("a,,b") is reported
    listed = df.loc[classes != "", ["image_id"]].assign(
        defect_class=classes[classes != ""].str.split(",")
    )
    exploded = listed.explode("defect_class", ignore_index=True)
    return {"manifest": manifest, "manifest_classes": exploded[["image_id", "defect_class"]]}


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


def manifest_suites(params: Params) -> dict[str, gx.ExpectationSuite]:
    """Expectations of the manifest frames (see :func:`manifest_frames`)."""
    line = params.line
    splits = sorted({split for _, split, _ in SPLITS})
    rows: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is set on every row")
        for c in MANIFEST_REQUIRED
    ]
    rows += [
        gxe.ExpectColumnValuesToBeUnique(column="image_id", description="image ids are unique"),
        gxe.ExpectColumnValuesToBeInSet(
            column="domain", value_set=sorted(line.setups), description="domains of line.setups"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="split", value_set=splits, description="splits the line generator writes"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="width", value_set=[line.image_size], description="width is line.image_size"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="height", value_set=[line.image_size], description="height is line.image_size"
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sha256", regex=SHA256_REGEX, description="sha256 is 64 lowercase hex digits"
        ),
    ]
    for domain in sorted(line.setups):
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
    classes = [
        gxe.ExpectColumnValuesToBeInSet(
            column="defect_class",
            value_set=list(line.classes),
            description="defect classes of line.classes",
        )
    ]
    return {
        "manifest": _suite("manifest", rows),
        "manifest_classes": _suite("manifest_classes", classes),
    }


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


def _describe(frame: str, res: dict[str, Any], max_examples: int, shown: int) -> Failure:
    """A readable failure from one great-expectations result (its JSON dict)."""
    config = res["expectation_config"]
    kwargs = config["kwargs"]
    etype = config["type"]
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
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
        # through JSON: numpy scalars in the results become plain numbers
        data = json.loads(json.dumps(out.to_json_dict(), default=str))
        results[frame] = data
        evaluated += int(data["statistics"]["evaluated_expectations"])
        failures += [
            _describe(frame, r, max_examples, shown) for r in data["results"] if not r["success"]
        ]
    return SuiteResult(name, not failures, evaluated, failures, results)


def check_manifest(params: Params, df: pd.DataFrame) -> SuiteResult:
    """Run the manifest suite on a manifest frame (``read_manifest(..., check_files=False)``)."""
    return run_suites(
        "manifest", manifest_frames(df), manifest_suites(params), params.validate.max_examples
    )


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
