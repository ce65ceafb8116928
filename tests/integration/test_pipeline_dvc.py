"""The DVC pipeline for real: `dvc repro` of the repository's dvc.yaml in a temp git repo.

A tiny line and 1-2 epochs: every stage runs, the MLflow store (embedded sqlite default) gets the
runs and the registry its champion; a second `dvc repro` does nothing; changing one training
param reruns only the strategies and what follows them; `dvc exp run -S` records an experiment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STRATEGIES = ["scratch", "scratch+dann", "transfer+omnia"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # the embedded default: sqlite:///mlflow.db in the repo, for tracking and registry
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env |= {
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    return env


def sh(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sh(cwd, str(BIN / "dvc"), *args)


def set_params(repo: Path, **values: object) -> None:
    """Edit params.yaml in place: dotted keys."""
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in values.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repo with the project's pipeline, run once with `dvc repro`."""
    r = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, r / name)
    shutil.copytree(REPO / "src", r / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("data/feedback", "data/ingest"):  # git-tracked inputs of `mentor`, `line`
        (r / folder).mkdir(parents=True)
        shutil.copy(REPO / folder / "README.md", r / folder / "README.md")
    set_params(
        r,
        **{
            "base.profile": "tiny",
            "train_baseline.epochs": 2,
            "train.epochs": 1,
            "train.strategies": STRATEGIES,
            "evaluate.n_examples": 2,
            "mine.threshold": 0.01,  # a 2-epoch model detects little at 0.5
        },
    )
    sh(r, "git", "init", "-q")
    dvc(r, "init", "-q")
    sh(r, "git", "add", "-A")
    sh(r, "git", "commit", "-qm", "pipeline")
    start = time.perf_counter()
    out = dvc(r, "repro").stdout
    print(f"first dvc repro: {time.perf_counter() - start:.1f} s")
    assert "Running stage 'register'" in out
    return r


def test_repro_runs_every_stage_and_registers_a_champion(repo: Path) -> None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    expected = {
        "line",
        "validate",
        "train_baseline",
        "evaluate_baseline",
        "mine",
        "mentor",
        "report",
        "register",
    } | {f"{s}@{v}" for s in ("train", "evaluate") for v in STRATEGIES}
    assert set(lock) == expected
    # each stage lists only what it reads: the baseline does not depend on train.* params
    assert not any(k.startswith("train.") for k in lock["train_baseline"]["params"]["params.yaml"])

    table = (repo / "results/report/table1.md").read_text()
    assert "Baseline" in table and "+ DANN" in table
    decision = json.loads((repo / "results/register/decision.json").read_text())
    assert decision["first_model"]["first_model"] is True
    assert decision["decision"] in ("promoted", "refused")
    assert decision["candidate"]["variant"] in STRATEGIES
    assert decision["aliases"]["champion"] in {r["version"] for r in decision["registered"]}
    assert (repo / "mlflow.db").exists() and (repo / "mlartifacts").is_dir()

    metrics = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = metrics[""]["data"]
    assert "results/evaluate/scratch+dann/metrics.json" in files
    assert "results/register/metrics.json" in files
    # declared plots render with no extra code: training curves, PR curves, Table 1 figures
    dvc(repo, "plots", "show", "-o", "plots_html")
    html = (repo / "plots_html/index.html").read_text()
    assert "results/train/scratch+dann/history.json" in html
    assert "pr_new.png" in html and "variants.png" in html
    shutil.rmtree(repo / "plots_html")


def test_registered_champion_predicts_like_the_torch_model(repo: Path) -> None:
    """`mlflow.pyfunc.load_model("models:/defect-segmenter@champion")` serves the model."""
    code = """
import json, sys
import mlflow, numpy as np, torch
from mentoring.evaluation import predict
from mentoring.models.store import load_model
from mentoring.data.dataset import CellDataset
mlflow.set_tracking_uri("sqlite:///mlflow.db")
dec = json.load(open("results/register/decision.json"))
champ = dec["aliases"]["champion"]
variant = next(r["variant"] for r in dec["registered"] if r["version"] == champ)
data = CellDataset.from_manifest(
    "data/manifests/line.parquet", "new", "eval",
    ("scratch", "crack", "dent", "stain", "hole", "chip"), 8, 0.06)
images = data.split.images[:4]
served = mlflow.pyfunc.load_model("models:/defect-segmenter@champion")
got = served.predict(images.numpy())  # uint8 pixels
model, _ = load_model(f"models/{variant}.pt")
want = predict(model, images)
print(json.dumps({"shape": list(got.shape), "diff": float(np.abs(got - want).max())}))
"""
    out = json.loads(sh(repo, sys.executable, "-c", code).stdout.strip().splitlines()[-1])
    assert out["shape"] == [4, 6, 16, 16]
    assert out["diff"] < 1e-5


def test_registry_commands_for_people(repo: Path) -> None:
    """`mentoring registry list | promote | rollback` and a second `register` (exit 0)."""
    mentoring = str(BIN / "mentoring")
    outs = [repo / "results/register/decision.json", repo / "results/register/metrics.json"]
    saved = [p.read_bytes() for p in outs]  # the stage's outputs, restored for the no-op test
    listing = sh(repo, mentoring, "registry", "list").stdout
    assert "champion" in listing and "baseline" in listing
    decision = json.loads((repo / "results/register/decision.json").read_text())
    champion = decision["aliases"]["champion"]
    other = next(r["version"] for r in decision["registered"] if r["version"] != champion)

    # registering the same models again creates nothing; the gate's answer is a normal exit
    out = sh(repo, mentoring, "register").stdout
    assert "registered: nothing new" in out
    again = json.loads((repo / "results/register/decision.json").read_text())
    assert again["first_model"] is None
    assert again["decision"] == "refused" or again["candidate"]["version"] != champion

    champion = again["aliases"]["champion"]
    other = next(r["version"] for r in again["registered"] if r["version"] != champion)
    out = sh(
        repo, mentoring, "registry", "promote", other, "--reason", "line 3 test", "--by", "qa"
    ).stdout
    assert f"-> v{other}" in out
    out = sh(repo, mentoring, "registry", "rollback", "--reason", "undo").stdout
    assert f"v{other} -> v{champion} (rolled back)" in out
    proc = subprocess.run(
        [mentoring, "registry", "promote", "999", "--reason", "typo"],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no version 999" in proc.stderr
    for path, data in zip(outs, saved, strict=True):
        path.write_bytes(data)


def test_champion_from_the_registry_mines_and_evaluates(repo: Path, tmp_path: Path) -> None:
    """`--model models:/defect-segmenter@champion`: the next round mines with the champion."""
    mentoring = str(BIN / "mentoring")
    decision = json.loads((repo / "results/register/decision.json").read_text())
    champion = decision["aliases"]["champion"]
    variant = next(r["variant"] for r in decision["registered"] if r["version"] == champion)
    uri = "models:/defect-segmenter@champion"
    sh(repo, mentoring, "mine", "--model", uri, "--tasks", str(tmp_path / "tasks.json"),
       "--results", str(tmp_path / "mine"))  # fmt: skip
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert tasks["model"]["name"] == f"defect-segmenter v{champion}"
    assert tasks["model"]["path"] == uri and len(tasks["model"]["sha256"]) == 64
    sh(repo, mentoring, "evaluate", "--model", uri, "--name", variant, "--no-track",
       "--results", str(tmp_path / "eval"))  # fmt: skip
    got = json.loads((tmp_path / "eval/metrics.json").read_text())["domains"]
    want_dir = "evaluate_baseline" if variant == "baseline" else f"evaluate/{variant}"
    want = json.loads((repo / f"results/{want_dir}/metrics.json").read_text())["domains"]
    assert got == want  # the registered model is the trained one


def test_second_repro_does_nothing(repo: Path) -> None:
    before = (repo / "dvc.lock").read_text()
    start = time.perf_counter()
    out = dvc(repo, "repro").stdout
    print(f"no-op dvc repro: {time.perf_counter() - start:.1f} s")
    assert "Running stage" not in out
    assert "up to date" in out
    assert (repo / "dvc.lock").read_text() == before


def test_an_image_edited_by_hand_is_rebuilt_and_nothing_downstream_reruns(repo: Path) -> None:
    """The stages after `line` depend on the manifest (every file's sha256), not on data/line:
    DVC sees the edit as `line`'s changed output, and repro rebuilds the line (not cached: the
    same bytes, the same manifest), nothing after it. The same for a clone that `dvc pull`ed
    everything but the images (data/line is not in DVC's cache)."""
    image = next((repo / "data/line/new/pool/images").iterdir())
    original = image.read_bytes()
    lock = (repo / "dvc.lock").read_text()
    image.write_bytes(original + b"\0")
    for change in ("modified", "deleted"):
        status = json.loads(dvc(repo, "status", "--json").stdout)
        assert status == {"line": [{"changed outs": {"data/line": change}}]}
        out = dvc(repo, "repro").stdout
        ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
        assert ran == {"line"}
        assert image.read_bytes() == original
        assert (repo / "dvc.lock").read_text() == lock
        assert json.loads(dvc(repo, "status", "--json").stdout) == {}
        if change == "modified":
            shutil.rmtree(repo / "data/line")  # then as a fresh clone after `dvc pull`


def test_changing_a_training_param_reruns_only_what_follows(repo: Path) -> None:
    hist = {v: repo / f"results/train/{v}/history.json" for v in STRATEGIES}
    before = {v: p.read_text() for v, p in hist.items()}
    set_params(repo, **{"train.dann_weight": 0.2})
    status = json.loads(dvc(repo, "status", "--json").stdout)
    assert set(status) == {f"train@{s}" for s in STRATEGIES}
    out = dvc(repo, "repro").stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {f"{s}@{v}" for s in ("train", "evaluate") for v in STRATEGIES} | {
        "report",
        "register",
    }
    # the strategies without DANN resumed from their finished checkpoints (same epoch timings);
    # the DANN one trained again
    after = {v: p.read_text() for v, p in hist.items()}
    assert after["scratch"] == before["scratch"]
    assert after["transfer+omnia"] == before["transfer+omnia"]
    assert after["scratch+dann"] != before["scratch+dann"]
    set_params(repo, **{"train.dann_weight": 0.1})


def test_dvc_exp_run_with_a_param_is_listed(repo: Path) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "ran", "--allow-empty")
    dvc(repo, "exp", "run", "-n", "lambda-half", "-S", "train.lambda_w=0.5")
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    names = [e.get("name") for b in shown for e in (b.get("experiments") or []) for e in e["revs"]]
    assert "lambda-half" in names
    assert np.isfinite(yaml.safe_load((repo / "params.yaml").read_text())["train"]["lambda_w"])


def test_real_verdicts_through_the_server_then_dvc_repro(repo: Path) -> None:
    """The README's path from real operators to a retrained, gated model, exactly as written:
    `mentoring annotate serve --tasks data/mining/tasks.json`, operators answer over HTTP,
    `mentoring annotate export` (into data/feedback/), `mentor.source: import`, `dvc repro`.
    The import uses that file alone (no simulated operator), its verdicts become the partial
    labels, the strategies retrain and the gate decides again."""
    from mentoring.io import sha256_file
    from tests.integration.test_annotate_server import Operator, _request_id
    from tests.servers import annotate_server

    tasks_path = repo / "data/mining/tasks.json"
    tasks = json.loads(tasks_path.read_text())
    # the documented default database of a task set: where `annotate export` looks for it
    db = repo / "data/annotate" / f"annotate-{sha256_file(tasks_path)[:12]}.sqlite"
    given: dict[str, str] = {}
    with annotate_server(tasks_path, db) as server:
        op = Operator(server.url, "op-line-2")
        for _ in range(len(tasks["images"])):  # bounded: one image per call
            image = op.api("/api/next")["image"]
            if image is None:
                break
            for k, a in enumerate(image["areas"]):
                verdict = "defect" if (len(given) + k) % 3 == 0 else "healthy"
                body = {"request_id": _request_id(), "image_id": image["image_id"],
                        "area_id": a["area_id"], "verdict": verdict}  # fmt: skip
                op.api("/api/verdict", body)
                given[a["area_id"]] = verdict
            if not image["areas"]:  # answered areas finish an image; one without is "done"
                op.api("/api/done", {"request_id": _request_id(), "image_id": image["image_id"]})
    assert given, "the mined tasks had no area to answer"
    sh(repo, str(BIN / "mentoring"), "annotate", "export")
    (exported,) = sorted((repo / "data/feedback").glob("annotate-*.json"))
    set_params(repo, **{"mentor.source": "import"})
    try:
        out = dvc(repo, "repro").stdout
        ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
        assert {"mentor", "report", "register"} <= ran
        assert {f"train@{s}" for s in STRATEGIES} <= ran
        metrics = json.loads((repo / "results/mentor/metrics.json").read_text())
        assert metrics["files"] == [exported.name]  # the operators' file, nothing simulated
        record = json.loads((repo / "data/mentor/simulated.json").read_text())
        assert record["simulated"] is False
        n_defect = sum(v == "defect" for v in given.values())
        assert metrics["n_confirmed"] == n_defect and metrics["n_infirmed"] == len(given) - n_defect
        decision = json.loads((repo / "results/register/decision.json").read_text())
        assert decision["decision"] in ("promoted", "refused") and decision["reasons"]
        assert "Running stage" not in dvc(repo, "repro").stdout  # imported: up to date
    finally:
        set_params(repo, **{"mentor.source": "simulate"})
