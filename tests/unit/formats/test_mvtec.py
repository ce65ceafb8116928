"""Tests of the MVTec AD / VisA import (src/mentoring/formats/mvtec.py) and its CLI.

Fixture trees are built here: tiny gray PNGs, 0/255 masks with a rectangle per defect image.
"""

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from mentoring.cli import app
from mentoring.config import parse_params
from mentoring.data.manifest import read_manifest
from mentoring.formats.mvtec import (
    FormatError,
    classes_override,
    import_mvtec,
    import_visa,
    read_classes,
)

DEFECTS = {"broken": 6, "crack": 4}


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_mvtec(
    root: Path,
    category: str,
    defects: dict[str, int] = DEFECTS,
    n_train: int = 3,
    n_good: int = 4,
    size: tuple[int, int] = (40, 24),  # (w, h): any size, not the model's
) -> Path:
    """An MVTec AD category: train/good, test/good, test/<defect> with ground_truth masks."""
    w, h = size
    rng = np.random.default_rng(0)
    cat = root / category
    for i in range(n_train):
        _png(cat / "train/good" / f"{i:03d}.png", rng.integers(0, 255, (h, w), np.uint8))
    for i in range(n_good):
        _png(cat / "test/good" / f"{i:03d}.png", rng.integers(0, 255, (h, w), np.uint8))
    for defect, n in defects.items():
        for i in range(n):
            _png(cat / "test" / defect / f"{i:03d}.png", rng.integers(0, 255, (h, w), np.uint8))
            mask = np.zeros((h, w), np.uint8)
            mask[2 : 2 + i + 2, 3 : 3 + i + 3] = 255
            _png(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return root


def _names(out: Path, domain: str, split: str, folder: str = "images") -> list[str]:
    d = out / domain / split / folder
    return sorted(p.stem for p in d.iterdir()) if d.is_dir() else []


def _mask(out: Path, domain: str, split: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(out / domain / split / "masks" / f"{name}.png"))


def test_layout_classes_masks_and_shares(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "mvtec", "bottle")
    out = tmp_path / "ingest"
    res = import_mvtec(root, "bottle", out, "original", train_share=0.5, seed=3)

    assert res.classes == ["broken", "crack"] and res.new_classes == ["broken", "crack"]
    assert read_classes(out) == ["broken", "crack"]
    assert res.skipped == [] and res.warnings == []
    train, ev = _names(out, "original", "train"), _names(out, "original", "eval")
    assert _names(out, "original", "train", "masks") == train  # every image has its mask
    assert _names(out, "original", "eval", "masks") == ev
    assert not set(train) & set(ev)
    # all defect-free training images, half of each test group (rounded half up) in train
    assert {f"bottle-train_good-{i:03d}" for i in range(3)} <= set(train)
    for group, n in {"good": 4, **DEFECTS}.items():
        in_train = [t for t in train if t.startswith(f"bottle-{group}-")]
        in_eval = [e for e in ev if e.startswith(f"bottle-{group}-")]
        assert (len(in_train), len(in_eval)) == (n // 2, n - n // 2), group
    assert res.splits["train"].images == len(train) == 3 + 2 + 3 + 2
    assert res.splits["eval"].classes == {"broken": 3, "crack": 2}
    # the image bytes are copied as they are; masks are class indices at the image's size
    name = next(t for t in train + ev if t.startswith("bottle-crack-"))
    split = "train" if name in train else "eval"
    src = root / "bottle/test/crack" / f"{name.rsplit('-', 1)[1]}.png"
    assert (out / "original" / split / "images" / f"{name}.png").read_bytes() == src.read_bytes()
    mask = _mask(out, "original", split, name)
    truth = np.asarray(Image.open(root / f"bottle/ground_truth/crack/{src.stem}_mask.png"))
    assert mask.dtype == np.uint8 and mask.shape == (24, 40)
    assert set(np.unique(mask)) == {0, 2} and np.array_equal(mask == 2, truth == 255)
    good = _mask(out, "original", "train", "bottle-train_good-000")
    assert good.shape == (24, 40) and not good.any()
    assert res.classes_override() == "-S 'line.classes=[broken,crack]'"


def test_split_draw_is_seeded_and_new_domain_uses_pool(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "mvtec", "bottle", {"broken": 12}, n_good=12)

    def draw(seed: int, name: str, domain: str = "original") -> list[str]:
        out = tmp_path / name
        import_mvtec(root, "bottle", out, domain, train_share=0.25, seed=seed)
        first = "train" if domain == "original" else "pool"
        return _names(out, domain, first)

    a, b = draw(7, "a"), draw(7, "b")
    assert a == b  # same seed, same split
    assert len([n for n in a if "-broken-" in n]) == 3  # 25 % of 12
    assert any(draw(s, f"s{s}") != a for s in range(3))  # another seed draws otherwise
    pool = draw(7, "n", domain="new")
    assert pool == a  # the draw depends on (seed, category, group), not on the domain
    assert _names(tmp_path / "n", "new", "eval") and not (tmp_path / "n/original").exists()


def test_missing_and_wrong_size_masks_are_reported(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "mvtec", "bottle")
    (root / "bottle/ground_truth/broken/002_mask.png").unlink()
    _png(root / "bottle/ground_truth/crack/001_mask.png", np.full((10, 10), 255, np.uint8))
    (root / "bottle/test/crack/notes.txt").write_text("not an image")
    _png(root / "bottle/ground_truth/crack/099_mask.png", np.zeros((24, 40), np.uint8))
    out = tmp_path / "ingest"
    res = import_mvtec(root, "bottle", out, "original")

    reasons = {Path(s.file).name: s.reason for s in res.skipped}
    assert set(reasons) == {"002.png", "notes.txt", "099_mask.png"}
    assert "002_mask.png not found" in reasons["002.png"]
    assert "ground_truth/broken/002_mask.png" in reasons["002.png"]
    assert "not an image file" in reasons["notes.txt"]
    assert "mask without an image" in reasons["099_mask.png"]
    all_names = _names(out, "original", "train") + _names(out, "original", "eval")
    assert "bottle-broken-002" not in all_names
    # the wrong-size mask is written as it is (ingestion quarantines it), with a warning
    assert "bottle-crack-001" in all_names
    split = "train" if "bottle-crack-001" in _names(out, "original", "train") else "eval"
    assert _mask(out, "original", split, "bottle-crack-001").shape == (10, 10)
    assert len(res.warnings) == 1 and "10x10" in res.warnings[0]


def test_errors_name_the_path(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "mvtec", "bottle")
    with pytest.raises(FormatError, match=r"mvtec/cable: MVTec AD category folder not found"):
        import_mvtec(root, "cable", tmp_path / "out", "original")
    (root / "empty/test").mkdir(parents=True)
    with pytest.raises(FormatError, match=r"empty/train/good: missing"):
        import_mvtec(root, "empty", tmp_path / "out", "original")
    with pytest.raises(FormatError, match=r"domain 'later'"):
        import_mvtec(root, "bottle", tmp_path / "out", "later")
    with pytest.raises(FormatError, match=r"--train-share 1.5"):
        import_mvtec(root, "bottle", tmp_path / "out", "original", train_share=1.5)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/classes.json").write_text("{oops")
    with pytest.raises(FormatError, match=r"bad/classes.json: not valid JSON \(line 1"):
        import_mvtec(root, "bottle", tmp_path / "bad", "original")


def test_classes_merge_and_reimport(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "mvtec", "bottle")
    make_mvtec(root, "screw", {"crack": 2, "thread": 2})
    out = tmp_path / "ingest"
    out.mkdir()
    (out / "classes.json").write_text('["scratch", "crack"]')
    import_mvtec(root, "bottle", out, "original")
    res = import_mvtec(root, "screw", out, "new")
    # existing names keep their index; new ones are appended
    assert res.classes == ["scratch", "crack", "broken", "thread"]
    assert res.new_classes == ["thread"]
    for name in _names(out, "new", "pool") + _names(out, "new", "eval"):
        split = "pool" if name in _names(out, "new", "pool") else "eval"
        values = set(np.unique(_mask(out, "new", split, name)).tolist()) - {0}
        assert values <= ({2} if "-crack-" in name else {4} if "-thread-" in name else set())
    # importing the same category again: refused, unless --overwrite (no stale copies left)
    with pytest.raises(FormatError, match=r"already exist: screw was imported.*--overwrite"):
        import_mvtec(root, "screw", out, "new", seed=5)
    import_mvtec(root, "screw", out, "new", seed=5, train_share=0.0, overwrite=True)
    pool, ev = _names(out, "new", "pool"), _names(out, "new", "eval")
    assert pool == [f"screw-train_good-{i:03d}" for i in range(3)]
    assert len(ev) == 4 + 2 + 2 and not set(pool) & set(ev)
    assert len(_names(out, "original", "train")) > 0  # the other domain is untouched


def test_classes_override_reads_back_in_yaml() -> None:
    for names in (["a", "b_c"], ["true", "null", "1x", "with space", "it's", "a,b"]):
        arg = classes_override(names)
        flag, value = shlex.split(arg)
        assert flag == "-S"
        key, _, text = value.partition("=")
        assert key == "line.classes" and yaml.safe_load(text) == names


def make_visa(root: Path, obj: str = "candle", size: tuple[int, int] = (32, 20)) -> Path:
    w, h = size
    rng = np.random.default_rng(1)
    rows = []
    for i in range(4):
        rel = f"{obj}/Data/Images/Normal/{i:04d}.png"
        _png(root / rel, rng.integers(0, 255, (h, w), np.uint8))
        rows.append([obj, "train" if i < 2 else "test", "normal", rel, ""])
    for i in range(4):
        rel = f"{obj}/Data/Images/Anomaly/{i:03d}.png"
        _png(root / rel, rng.integers(0, 255, (h, w), np.uint8))
        mask_rel = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
        mask = np.zeros((h, w), np.uint8)
        mask[1:5, 2:9] = 1  # VisA masks: 0 / non-zero
        if i != 3:
            _png(root / mask_rel, mask)
        rows.append([obj, "test", "anomaly", rel, mask_rel])
    rows.append(["pcb1", "train", "normal", "pcb1/x.png", ""])
    (root / "split_csv").mkdir(parents=True)
    with (root / "split_csv/1cls.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["object", "split", "label", "image", "mask"], *rows])
    return root


def test_visa_object(tmp_path: Path) -> None:
    root = make_visa(tmp_path / "visa")
    out = tmp_path / "ingest"
    res = import_visa(root, "candle", out, "original", visa_class="blemish")
    assert res.classes == ["blemish"]
    assert [Path(s.file).name for s in res.skipped] == ["003.png"]  # its mask is missing
    train, ev = _names(out, "original", "train"), _names(out, "original", "eval")
    assert {"candle-train_good-0000", "candle-train_good-0001"} <= set(train)
    assert len(train) + len(ev) == 7
    name = next(n for n in train + ev if "-blemish-" in n)
    split = "train" if name in train else "eval"
    assert set(np.unique(_mask(out, "original", split, name))) == {0, 1}
    with pytest.raises(FormatError, match=r"no row of object 'wax'.*candle"):
        import_visa(root, "wax", out, "original")


def test_cli_import_mvtec_and_errors(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "mvtec", "bottle")
    out = tmp_path / "ingest"
    report = tmp_path / "report.json"
    args = ["import", "mvtec", str(root), "-c", "bottle", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--domain", "original", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "-S 'line.classes=[broken,crack]'" in result.output
    assert "original/train" in result.output and "original/eval" in result.output
    assert json.loads(report.read_text())["splits"]["train"]["images"] == 10
    again = CliRunner().invoke(app, [*args, "--domain", "original"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    missing = CliRunner().invoke(
        app, ["import", "mvtec", str(root), "-c", "nope", "--out", str(out), "--domain", "new"]
    )
    assert missing.exit_code == 2
    said = " ".join(missing.output.split())  # rich wraps long lines
    assert said.startswith("error:") and "nope: MVTec AD category folder not found" in said


def test_end_to_end_import_then_ingest(tmp_path: Path) -> None:
    """Two categories as the two domains, then the folder ingestion of the line stage."""
    from mentoring.line.ingest import ingest_line

    root = make_mvtec(tmp_path / "mvtec", "bottle", size=(128, 128))
    make_mvtec(root, "screw", {"crack": 4, "thread": 2}, size=(128, 128))
    out = tmp_path / "ingest"
    import_mvtec(root, "bottle", out, "original")
    res = import_mvtec(root, "screw", out, "new")
    params = parse_params(
        {"line": {"source": "folder", "ingest_dir": str(out), "classes": res.classes}}
    )
    manifest = ingest_line(params, out, tmp_path / "data")[0]
    df = read_manifest(manifest)
    counts = df.groupby(["domain", "split"]).size().to_dict()
    assert counts == {
        ("original", "train"): 3 + 2 + 3 + 2,
        ("original", "eval"): 2 + 3 + 2,
        ("new", "pool"): 3 + 2 + 2 + 1,
        ("new", "eval"): 2 + 2 + 1,
    }
    bottle = df.set_index("image_id").loc["original-train-bottle-train_good-000"]
    assert bottle["defect_classes"] == ""
    crack = df[df["image_id"].str.contains("-screw-crack-")]
    assert (crack["defect_classes"] == "crack").all() and len(crack) == 4
    thread = df[df["image_id"].str.contains("-screw-thread-")]
    assert (thread["defect_classes"] == "thread").all()
