"""Import MVTec AD (and VisA) categories into the folder layout ``line.source: folder`` ingests.

MVTec AD category folder (https://www.mvtec.com/company/research/datasets/mvtec-ad)::

    <root>/<category>/train/good/*.png                       defect-free
    <root>/<category>/test/<defect>/*.png                    test/good: defect-free
    <root>/<category>/ground_truth/<defect>/<name>_mask.png  0 = healthy, 255 = defect

VisA (https://github.com/amazon-science/spot-diff)::

    <root>/split_csv/1cls.csv        columns object,split,label,image,mask (paths under <root>)
    <root>/<object>/Data/Images/{Normal,Anomaly}/*.JPG, Data/Masks/Anomaly/*.png (0 / non-zero)

What an import writes (:mod:`mentoring.line.ingest` reads it)::

    <out>/<domain>/<split>/images/<name><suffix>  the image's bytes, copied as they are
    <out>/<domain>/<split>/masks/<name>.png       class-index mask (uint8, original resolution):
                                                  0 healthy, k = the k-th name of classes.json
    <out>/classes.json                            the class names, in mask-value order

Images keep their original resolution: ingestion fits any size to ``line.image_size`` with
``line.resize``. **Splits**: ``--domain original`` gives ``original/train`` and
``original/eval``, ``--domain new`` gives ``new/pool`` and ``new/eval``. Every defect-free training
image goes to the first split (train, pool); of each test group (each defect type, and
``test/good``) a seeded ``train_share`` goes to the first split too, the rest to eval. The draw of
a group depends only on (seed, category, group), so adding a defect type moves nothing else.

**Classes**: defect folder names (VisA: ``visa_class``) are merged into ``<out>/classes.json``:
names already there keep their index, new ones are appended in sorted order;
:meth:`ImportResult.classes_override` is the ``-S 'line.classes=[...]'`` to ingest with.

**Names** are ``<category>-<group>-<stem>`` (``bottle-broken_large-000``; defect-free training
images: ``bottle-train_good-000``), unique within a domain. Re-importing a category that is
already there is an error unless ``overwrite``, which first deletes that category's files in both
splits of the domain (the seed or share may have moved them).

A test defect image without its mask (or with an unreadable one) is not imported: it is listed in
:attr:`ImportResult.skipped` with the reason. A mask of the wrong size is written as it is (its
values mapped to the class index): ingestion quarantines it with ``mask_size_mismatch``.

The layout helpers (classes.json, names, writing a pair) are shared with :mod:`.coco`.

Example:
    >>> res = import_mvtec(Path("mvtec_ad"), "bottle", Path("data/ingest"), "original")
    >>> res.classes_override()
    "-S 'line.classes=[broken_large,broken_small,contamination]'"
"""

import csv
import json
import math
import re
import shlex
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from mentoring.data.images import IMAGE_SUFFIXES, encode_png
from mentoring.io import write_bytes, write_json

Progress = Callable[[int, int], None]

#: the splits of each domain, in the order (first split, eval); as mentoring.line.generate.SPLITS
DOMAIN_SPLITS: dict[str, tuple[str, str]] = {"original": ("train", "eval"), "new": ("pool", "eval")}
CLASSES_FILE = "classes.json"
#: group of the defect-free training images (all go to the first split)
TRAIN_GOOD = "train_good"
#: group of the defect-free test images (shared like a defect type)
GOOD = "good"
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


class FormatError(ValueError):
    """Input that cannot be imported or exported; the message names the file, key or id."""


@dataclass(frozen=True)
class Skipped:
    """A source file that was not imported, and why."""

    file: str
    reason: str


@dataclass
class SplitCount:
    """What one split received: images, defect-free images, images per class present."""

    images: int = 0
    healthy: int = 0
    classes: Counter[str] = field(default_factory=Counter)


@dataclass
class ImportResult:
    """What an import wrote.

    Attributes:
        out: the ingest folder (``line.ingest_dir``).
        domain: ``original`` or ``new``.
        classes: every name of ``classes.json`` after the import (mask value k = classes[k-1]).
        new_classes: the names this import appended.
        splits: split -> counts of what it received.
        skipped: source files not imported, with the reason.
        warnings: things that were imported but deserve a look (e.g. a size disagreement).
    """

    out: Path
    domain: str
    classes: list[str]
    new_classes: list[str]
    splits: dict[str, SplitCount]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def classes_override(self) -> str:
        """The ``-S 'line.classes=[...]'`` argument that ingests this folder."""
        return classes_override(self.classes)

    def as_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "domain": self.domain,
            "classes": self.classes,
            "new_classes": self.new_classes,
            "splits": {
                s: {"images": c.images, "healthy": c.healthy, "classes": dict(c.classes)}
                for s, c in self.splits.items()
            },
            "skipped": [{"file": s.file, "reason": s.reason} for s in self.skipped],
            "warnings": self.warnings,
        }


# --- the ingest layout, shared with coco.py ----------------------------------------------------


def check_domain_split(domain: str, split: str | None = None) -> None:
    """Raise :class:`FormatError` unless (domain, split) is one of the line's splits."""
    if domain not in DOMAIN_SPLITS:
        raise FormatError(f"domain {domain!r}: expected one of {sorted(DOMAIN_SPLITS)}")
    if split is not None and split not in DOMAIN_SPLITS[domain]:
        raise FormatError(
            f"split {split!r} of domain {domain!r}: expected one of {list(DOMAIN_SPLITS[domain])}"
        )


def check_class_name(name: str, where: str) -> None:
    """The rule of ``line.classes``: not blank, not padded, no '/'."""
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "/" in name:
        raise FormatError(
            f"{where}: class name {name!r} cannot be a line class (blank, padded or contains '/')"
        )


def read_classes(out: Path) -> list[str]:
    """The names of ``<out>/classes.json`` ([] when it does not exist)."""
    path = out / CLASSES_FILE
    return load_class_list(path) if path.exists() else []


def load_class_list(path: Path) -> list[str]:
    """A ``classes.json``: a JSON list of distinct class names (mask value k = names[k-1])."""
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: classes file not found") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FormatError(f"{path}: expected a JSON list of class names, got {names!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FormatError(f"{path}: duplicate class names {dup}")
    return names


def merge_classes(out: Path, names: Iterable[str], where: str) -> tuple[list[str], list[str]]:
    """Append the unknown ``names`` to ``<out>/classes.json``; return (all names, appended).

    Existing names keep their index (their masks stay valid); ``where`` names the source in
    errors. The file is written (atomically) before any mask that uses the new indices.
    """
    classes = read_classes(out)
    added: list[str] = []
    for name in names:
        check_class_name(name, where)
        if name not in classes and name not in added:
            added.append(name)
    merged = classes + added
    if len(merged) > 255:
        raise FormatError(f"{out / CLASSES_FILE}: {len(merged)} classes, masks are uint8 (<= 255)")
    if added or not (out / CLASSES_FILE).exists():
        write_json(out / CLASSES_FILE, merged)
    return merged, added


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def classes_override(classes: Sequence[str]) -> str:
    """``-S 'line.classes=[a,b]'``: plain YAML names when they read back as the same strings."""
    flow = "[" + ",".join(classes) + "]"
    plain = all(_PLAIN.match(c) for c in classes)
    if not plain or yaml.safe_load(flow) != list(classes):
        flow = json.dumps(list(classes))  # JSON is YAML: quoted names always read back as strings
    return "-S " + shlex.quote(f"line.classes={flow}")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as decoding orients it (EXIF orientation 5-8 swaps them).

    Raises:
        FormatError: the file cannot be read as an image.
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read the image ({exc})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_binary_mask(path: Path) -> np.ndarray:
    """A 0 / non-zero mask file (MVTec: 0/255) -> (H, W) bool.

    Raises:
        FormatError: the file cannot be read.
    """
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read the mask ({exc})") from None
    if arr.ndim == 3:  # an RGB(A) mask: any non-zero colour channel is defect
        return np.asarray(np.any(arr[..., :3] != 0, axis=2))
    return np.asarray(arr != 0)


def split_dirs(out: Path, domain: str, split: str) -> tuple[Path, Path]:
    """(images/, masks/) of one split."""
    base = out / domain / split
    return base / "images", base / "masks"


def existing_files(out: Path, domain: str, splits: Iterable[str], names: set[str]) -> list[Path]:
    """Files of ``names`` (images of any suffix, masks) already in these splits of ``out``."""
    found = []
    for split in splits:
        for folder in split_dirs(out, domain, split):
            if folder.is_dir():
                found += sorted(p for p in folder.iterdir() if p.is_file() and p.stem in names)
    return found


def clear_or_refuse(
    out: Path, domain: str, splits: Iterable[str], names: set[str], overwrite: bool, what: str
) -> None:
    """Refuse to write over an earlier import of ``what`` unless ``overwrite`` (then delete it)."""
    found = existing_files(out, domain, splits, names)
    if not found:
        return
    if not overwrite:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise FormatError(
            f"{', '.join(map(str, found[:3]))}{more} already exist: {what} was imported into "
            f"{out / domain} before; pass --overwrite to replace its files"
        )
    for path in found:
        path.unlink()


def write_pair(
    out: Path, domain: str, split: str, name: str, image: Path, mask: np.ndarray
) -> Path:
    """Copy ``image`` (its bytes as they are when ingestion reads its suffix) and write ``mask``.

    Returns the image's destination.
    """
    images_dir, masks_dir = split_dirs(out, domain, split)
    suffix = image.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        dest = images_dir / f"{name}{suffix}"
        write_bytes(dest, image.read_bytes())
    else:  # a format ingestion does not read (webp, gif...): re-encode losslessly as PNG
        try:
            with Image.open(image) as im:
                im.load()
                data = encode_png(np.asarray(im.convert("RGB" if im.mode != "L" else "L")))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise FormatError(f"{image}: cannot read the image ({exc})") from None
        dest = images_dir / f"{name}.png"
        write_bytes(dest, data)
    write_bytes(masks_dir / f"{name}.png", encode_png(mask.astype(np.uint8)))
    return dest


# --- MVTec AD and VisA ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    group: str  # TRAIN_GOOD, GOOD or a defect type: the unit of the split shares
    image: Path
    name: str  # output stem, unique within the domain
    cls: str | None  # class of the mask's non-zero pixels; None: defect-free (all-zero mask)
    mask: Path | None  # the binary source mask of a defect image (None: none was found)
    where: str = ""  # where a missing mask was looked for / came from, for the skip reason


def _images_in(folder: Path, skipped: list[Skipped]) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(Skipped(str(p), f"not an image file ({p.suffix or 'no suffix'})"))
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]


def mvtec_items(root: Path, category: str) -> tuple[list[_Item], list[Skipped]]:
    """The images of one MVTec AD category, and the files that cannot be imported."""
    cat = root / category
    if not cat.is_dir():
        known = (
            sorted(p.name for p in root.iterdir() if (p / "test").is_dir()) if root.is_dir() else []
        )
        hint = f" (categories there: {known})" if known else ""
        raise FormatError(f"{cat}: MVTec AD category folder not found{hint}")
    train_good, test, truth = cat / "train" / GOOD, cat / "test", cat / "ground_truth"
    for folder in (train_good, test):
        if not folder.is_dir():
            raise FormatError(
                f"{folder}: missing (an MVTec AD category holds train/good/, test/<defect>/ and "
                "ground_truth/<defect>/)"
            )
    skipped: list[Skipped] = []
    items = [
        _Item(TRAIN_GOOD, p, f"{category}-{TRAIN_GOOD}-{p.stem}", None, None)
        for p in _images_in(train_good, skipped)
    ]
    for group_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        group = group_dir.name
        images = _images_in(group_dir, skipped)
        if group == GOOD:
            items += [_Item(GOOD, p, f"{category}-{GOOD}-{p.stem}", None, None) for p in images]
            continue
        check_class_name(group, str(group_dir))
        if group == TRAIN_GOOD:  # the name of the defect-free training group
            raise FormatError(f"{group_dir}: a defect type cannot be named {TRAIN_GOOD!r}")
        for p in images:
            mask = truth / group / f"{p.stem}_mask.png"
            items.append(
                _Item(group, p, f"{category}-{group}-{p.stem}", group, mask, where=str(mask))
            )
        stems = {p.stem for p in images}
        if (truth / group).is_dir():
            for m in sorted((truth / group).iterdir()):
                if m.is_file() and m.name.removesuffix("_mask.png") not in stems:
                    skipped.append(Skipped(str(m), f"mask without an image in {group_dir}"))
    if not items:
        raise FormatError(f"{cat}: no image in train/good/ or test/*/")
    return items, skipped


def visa_items(root: Path, obj: str, visa_class: str) -> tuple[list[_Item], list[Skipped]]:
    """The images of one VisA object from ``<root>/split_csv/1cls.csv``.

    Normal images of the CSV's train split are the defect-free training images; normal test
    images form the ``good`` group; every anomaly (of either split) is class ``visa_class``.
    """
    path = root / VISA_CSV
    if not path.is_file():
        raise FormatError(f"{path}: VisA split file not found (expected under the VisA root)")
    check_class_name(visa_class, "--visa-class")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FormatError(f"{path}: missing column(s) {missing}; expected {list(VISA_COLUMNS)}")
        rows = [(n, r) for n, r in enumerate(reader, start=2) if r["object"] == obj]
    if not rows:
        with path.open(newline="") as f:
            known = sorted({r["object"] for r in csv.DictReader(f)})
        raise FormatError(f"{path}: no row of object {obj!r} (objects: {known})")
    items: list[_Item] = []
    skipped: list[Skipped] = []
    seen: dict[str, int] = {}
    for line, r in rows:
        split, label = r["split"].strip(), r["label"].strip()
        if split not in ("train", "test") or label not in ("normal", "anomaly"):
            raise FormatError(
                f"{path} line {line}: split {split!r} / label {label!r}; expected train|test and "
                "normal|anomaly"
            )
        image = root / r["image"].strip()
        if not image.is_file():
            skipped.append(Skipped(str(image), f"image not found ({path} line {line})"))
            continue
        if label == "normal":
            group, cls, mask = (TRAIN_GOOD if split == "train" else GOOD), None, None
        else:
            group, cls = visa_class, visa_class
            mask = root / r["mask"].strip() if r["mask"].strip() else None
        name = f"{obj}-{group}-{image.stem}"
        if name in seen:
            raise FormatError(
                f"{path} lines {seen[name]} and {line}: two images named {name!r} "
                f"(same file stem {image.stem!r} in one group)"
            )
        seen[name] = line
        where = str(mask) if mask else f"the mask column of {path} line {line} is empty"
        items.append(_Item(group, image, name, cls, mask, where=where))
    return items, skipped


def _share(n: int, share: float) -> int:
    return math.floor(n * share + 0.5)  # half up: 1 image at 0.5 goes to the first split


def assign_splits(
    items: Sequence[_Item], domain: str, share: float, seed: int, key: str
) -> list[tuple[str, _Item]]:
    """(split, item) for every item: a seeded ``share`` of each test group to the first split.

    Each group is drawn with its own generator, seeded by (seed, key, group), over its items in
    name order: the same inputs always give the same splits.
    """
    if not 0.0 <= share <= 1.0:
        raise FormatError(f"--train-share {share}: expected a fraction in [0, 1]")
    first, second = DOMAIN_SPLITS[domain]
    groups: dict[str, list[_Item]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    out: list[tuple[str, _Item]] = []
    for group in sorted(groups):
        members = sorted(groups[group], key=lambda it: it.name)
        if group == TRAIN_GOOD:
            out += [(first, it) for it in members]
            continue
        rng = np.random.default_rng([seed, zlib.crc32(f"{key}/{group}".encode())])
        picked = set(rng.permutation(len(members))[: _share(len(members), share)].tolist())
        out += [(first if i in picked else second, it) for i, it in enumerate(members)]
    return out


def _import_items(
    items: list[_Item],
    skipped: list[Skipped],
    what: str,
    out: Path,
    domain: str,
    train_share: float,
    seed: int,
    overwrite: bool,
    progress: Progress | None,
) -> ImportResult:
    check_domain_split(domain)
    dup = sorted(n for n, c in Counter(it.name for it in items).items() if c > 1)
    if dup:
        raise FormatError(f"{what}: several images would be named {dup[:5]}")
    assigned = assign_splits(items, domain, train_share, seed, what)
    read_classes(out)  # a broken classes.json fails before anything is deleted
    clear_or_refuse(out, domain, DOMAIN_SPLITS[domain], {it.name for it in items}, overwrite, what)
    # 1) classes first: a written mask's values always have their names in classes.json
    defect_types = sorted({it.cls for it in items if it.cls is not None})
    classes, added = merge_classes(out, defect_types, what)
    result = ImportResult(
        out, domain, classes, added, {s: SplitCount() for s in DOMAIN_SPLITS[domain]}, skipped
    )
    # 2) each image and its class-index mask, at the image's resolution
    for done, (split, it) in enumerate(assigned, start=1):
        if progress:
            progress(done, len(assigned))
        try:
            if it.cls is None:
                w, h = image_size(it.image)
                mask = np.zeros((h, w), np.uint8)
            elif it.mask is None or not it.mask.is_file():
                result.skipped.append(Skipped(str(it.image), f"no mask: {it.where} not found"))
                continue
            else:
                mask = read_binary_mask(it.mask).astype(np.uint8) * (classes.index(it.cls) + 1)
                w, h = image_size(it.image)
                if mask.shape != (h, w):
                    result.warnings.append(
                        f"{it.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {it.image} "
                        f"is {w}x{h} (copied as it is; ingestion will quarantine it)"
                    )
        except FormatError as exc:
            result.skipped.append(Skipped(str(it.image), str(exc)))
            continue
        write_pair(out, domain, split, it.name, it.image, mask)
        count = result.splits[split]
        count.images += 1
        if it.cls is None or not mask.any():
            count.healthy += 1
        else:
            count.classes[it.cls] += 1
    return result


def import_mvtec(
    root: Path,
    category: str,
    out: Path,
    domain: str,
    train_share: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Import one MVTec AD category into ``out`` as ``domain`` (see the module docstring).

    Raises:
        FormatError: the category folder or its train/good/, test/ is missing; the domain is
            unknown; the share is not in [0, 1]; an earlier import is in the way.
    """
    items, skipped = mvtec_items(Path(root), category)
    return _import_items(
        items, skipped, category, Path(out), domain, train_share, seed, overwrite, progress
    )


def import_visa(
    root: Path,
    obj: str,
    out: Path,
    domain: str,
    visa_class: str = "defect",
    train_share: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Import one VisA object (``split_csv/1cls.csv``) into ``out`` as ``domain``.

    VisA anomalies carry no defect type: all are class ``visa_class``.
    """
    items, skipped = visa_items(Path(root), obj, visa_class)
    return _import_items(
        items, skipped, obj, Path(out), domain, train_share, seed, overwrite, progress
    )


def detect_layout(root: Path, category: str) -> str:
    """``mvtec`` or ``visa``: which layout ``root`` holds for ``category``."""
    if (root / category / "train").is_dir() or (root / category / "test").is_dir():
        return "mvtec"
    if (root / VISA_CSV).is_file():
        return "visa"
    return "mvtec"  # its error names the missing category folder
