"""The package's layering, read from the imports themselves (README, "Layout"), so it can't rot.

Wings, from the top: ``cli`` → ``web`` and ``quality`` → ``core`` → ``storage`` → ``pipeline`` →
the shared modules (settings, errors, logs, metrics, validation, lazy). A module imports only from its own wing
or from wings below it (skipping levels is fine); ``web`` and ``quality`` sit side by side and do not
import each other. Litestar (and its multipart parser) is imported by ``web`` only, click and rich by
``cli`` only. Every import counts, also those inside functions or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "service"
SHARED = {"__init__", "settings", "errors", "logs", "metrics", "validation", "lazy"}
LEVELS = {"shared": 0, "pipeline": 1, "storage": 2, "core": 3, "web": 4, "quality": 4, "cli": 5}
OWNERS = {"litestar": "web", "multipart": "web", "click": "cli", "rich": "cli"}


def wing_of(module: str) -> str:
    """The wing of a dotted module name inside ``service``."""
    parts = module.split(".")
    assert parts[0] == "service", module
    if len(parts) == 1 or parts[1] in SHARED:
        return "shared"
    return parts[1]


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def test_the_wings_exist():
    wings = {wing_of(module) for module, _ in modules()}
    assert wings == set(LEVELS), "a new folder under service/ needs a place in the layering (LEVELS)"


def violations(module: str, path: Path) -> list[str]:
    """What in one file breaks the layering, one line each."""
    wing = wing_of(module)
    problems = []
    for line, target in imports(module, path):
        top = target.split(".")[0]
        if top == "service":
            other = wing_of(target)
            if other != wing and LEVELS[other] >= LEVELS[wing]:
                problems.append(f"line {line}: {wing} imports {target} ({other} is not below {wing})")
        elif top in OWNERS and OWNERS[top] != wing:
            problems.append(f"line {line}: only {OWNERS[top]} may import {top}")
    return problems


@pytest.mark.parametrize("module,path", modules(), ids=[module for module, _ in modules()])
def test_imports_run_downwards_only(module, path):
    problems = violations(module, path)
    assert not problems, f"{path.relative_to(PACKAGE.parent)}:\n" + "\n".join(problems)


def test_the_check_sees_violations(tmp_path):
    """The rule is not vacuous: an upward import, a sideways one and a foreign library are all reported."""
    source = tmp_path / "features.py"
    source.write_text("from ..storage import ModelStore\nimport litestar\n", encoding="utf-8")
    assert [problem.split(":")[0] for problem in violations("service.pipeline.features", source)] == ["line 1", "line 2"]
    sideways = tmp_path / "controller.py"
    sideways.write_text("def handler():\n    from ...quality import evaluate\n", encoding="utf-8")
    assert violations("service.web.records.controller", sideways) == [
        "line 2: web imports service.quality (quality is not below web)"
    ]
    assert violations("service.cli.fitting", sideways) == []


def domain_violations(module: str, path: Path) -> list[str]:
    """Inside a wing, parts stay apart: a web domain (``service/web/<domain>/``) imports only its own domain and
    web's top-level modules, never another domain's controller or schemas; a core part never imports the
    facade (``service.core.service`` wires the parts together, not the other way round)."""
    parts = module.split(".")
    problems = []
    for line, target in imports(module, path):
        target_parts = target.split(".")
        if parts[:2] == ["service", "web"] and len(parts) > 3 and target_parts[:2] == ["service", "web"]:
            own = parts[2]
            if len(target_parts) > 2 and (PACKAGE / "web" / target_parts[2]).is_dir() and target_parts[2] != own:
                problems.append(f"line {line}: web domain {own} imports {target} (another domain)")
        if parts[:2] == ["service", "core"] and len(parts) > 2 and parts[-1] != "service" and target == "service.core.service":
            problems.append(f"line {line}: core part {module} imports the facade")
    return problems


@pytest.mark.parametrize("module,path", modules(), ids=[module for module, _ in modules()])
def test_parts_of_a_wing_stay_apart(module, path):
    problems = domain_violations(module, path)
    assert not problems, f"{path.relative_to(PACKAGE.parent)}:\n" + "\n".join(problems)


def test_the_domain_check_sees_violations(tmp_path):
    source = tmp_path / "controller.py"
    source.write_text("from ..inspection.schemas import InferResponse\nfrom ..shared import off_loop\n", encoding="utf-8")
    assert domain_violations("service.web.records.controller", source) == [
        "line 1: web domain records imports service.web.inspection.schemas (another domain)"
    ]
    facade = tmp_path / "training.py"
    facade.write_text("from .service import InspectionService\n", encoding="utf-8")
    assert domain_violations("service.core.training", facade) == [
        "line 1: core part service.core.training imports the facade"
    ]
