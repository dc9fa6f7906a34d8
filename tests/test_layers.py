"""No module imports from a layer above its own (every import, also those inside functions).

    0  foundation                       records, hashing, atomic writes, the one document writer
    1  pipeline | data_manifests        the build steps | the manifest registry (never each other)
    2  curation | testbed | keepfit     the build, review queue and publishing | sample atlas,
                                        synthetic images, scoring | KeepFIT (reads manifests)
    3  flows                            CLI, Prefect flows, review web app

Packages on one floor do not import each other either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {
    "foundation": 0,
    "pipeline": 1,
    "data_manifests": 1,
    "curation": 2,
    "testbed": 2,
    "keepfit": 2,
    "flows": 3,
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level project package, line) of every import in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in FLOORS:
                found.add((top, node.lineno))
    return found


def violations(root: Path = ROOT) -> list[str]:
    problems = []
    for package, floor in FLOORS.items():
        for path in sorted((root / package).rglob("*.py")):
            for imported, line in sorted(imported_packages(path)):
                if imported == package:
                    continue
                other = FLOORS[imported]
                if other > floor or (other == floor):
                    where = "above" if other > floor else "beside"
                    problems.append(f"{path.relative_to(root)}:{line} imports {imported} (floor {other}, {where} {package})")
    return problems


def test_no_module_imports_from_a_layer_above_or_beside_it() -> None:
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    for package in FLOORS:
        (tmp_path / package).mkdir()
    (tmp_path / "pipeline" / "step.py").write_text("def f():\n    from data_manifests import publish\n")
    (tmp_path / "foundation" / "records.py").write_text("import flows.cli\n")
    assert violations(tmp_path) == [
        "foundation/records.py:1 imports flows (floor 3, above foundation)",
        "pipeline/step.py:2 imports data_manifests (floor 1, beside pipeline)",
    ]


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_every_package_is_on_a_floor(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
