"""Routes are written once (runtime/route_table.py): the app serves exactly the table's routes, each one labelled
for metrics and admitted or not as the table says, the documented ones in /openapi.json; no other module spells a
route's path; and the HTTP packages do not import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fakes import FakeEngine
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import runtime
from runtime.config import ModelSpec, ServerSettings, Settings
from runtime.route_table import (
    CONSOLE,
    DOCUMENTED_ROUTES,
    FIXED_ROUTES,
    FUNCTION_PATHS,
    RESERVED_NAMES,
    is_metered,
)
from runtime.server.app import create_app
from runtime.server.openapi import openapi_document
from runtime.server.routes import FunctionRoute
from runtime.server.services import Services

RUNTIME = Path(runtime.__file__).parent
TABLE = RUNTIME / "route_table.py"


def _app(tmp_path: Path) -> TestClient:
    settings = Settings(
        server=ServerSettings(functions_dir=tmp_path, console=True),
        models=(ModelSpec(("m",), Path("/models/fake")),),
    )
    services = Services(settings, engine_loader=lambda path, options: FakeEngine())
    return TestClient(create_app(services))


def test_the_app_serves_exactly_the_tables_routes(tmp_path: Path) -> None:
    app = _app(tmp_path).app
    served = {route.path for route in app.routes if isinstance(route, Route | Mount)}  # type: ignore[attr-defined]
    functions = {route.path for route in app.routes if isinstance(route, FunctionRoute)}  # type: ignore[attr-defined]
    assert functions == set(FUNCTION_PATHS)
    assert served - functions == {spec.path for spec in FIXED_ROUTES}


def test_every_route_has_a_label_and_every_documented_one_an_operation(tmp_path: Path) -> None:
    with _app(tmp_path) as client:
        for spec in FIXED_ROUTES:
            client.request(spec.methods[0], spec.path + ("/" if spec.prefix else ""))
        metrics = client.get("/metrics").text
    for spec in FIXED_ROUTES:
        assert f'route="{spec.label}"' in metrics, spec
    paths = openapi_document(Settings())["paths"]
    assert set(paths) == {spec.path for spec in DOCUMENTED_ROUTES}
    for spec in DOCUMENTED_ROUTES:
        assert {method.lower() for method in spec.methods} == set(paths[spec.path])
        assert all(operation["operationId"] == spec.operation_id for operation in paths[spec.path].values())


def test_admission_and_reserved_names_follow_the_table() -> None:
    assert is_metered("/v1/chat/completions") and is_metered("/echo") and is_metered("/echo/sub")
    for path in ("/healthz", "/readyz", "/metrics", "/v1/models", "/openapi.json", CONSOLE.path + "/api/overview"):
        assert not is_metered(path), path
    assert is_metered("/_consoled")  # a function's name that starts like the console's is still a function
    assert {"v1", "healthz", "readyz", "metrics", "openapi.json", "_console"} == RESERVED_NAMES


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_no_module_but_the_table_spells_a_route_path() -> None:
    paths = {spec.path for spec in FIXED_ROUTES} | set(FUNCTION_PATHS)
    spelled = {
        str(module.relative_to(RUNTIME)): sorted(paths & _string_constants(module))
        for module in RUNTIME.rglob("*.py")
        if module != TABLE
    }
    assert {module: found for module, found in spelled.items() if found} == {}


def _runtime_imports(module: Path) -> set[str]:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return {name for name in imported if name.startswith("runtime.")}


def _package_of(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize(("importer", "imported"), [("openai", "server"), ("openai", "binding")])
def test_the_http_packages_import_in_one_direction(importer: str, imported: str) -> None:
    """server imports openai (its routes) and binding (the AI binding); openai imports neither, and binding only
    openai's protocol (the wire format both answer with)."""
    offending = {
        str(module.relative_to(RUNTIME)): sorted(
            name for name in _runtime_imports(module) if _package_of(name) == imported
        )
        for module in (RUNTIME / importer).glob("*.py")
    }
    assert {module: names for module, names in offending.items() if names} == {}
    reverse = {name for module in (RUNTIME / imported).glob("*.py") for name in _runtime_imports(module)}
    if importer == "openai" and imported == "binding":
        assert {name for name in reverse if _package_of(name) == "openai"} <= {"runtime.openai.protocol"}


def test_the_import_checker_sees_an_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from runtime.server.app import create_app\nimport runtime.openai.protocol\n")
    assert _runtime_imports(module) == {"runtime.server.app", "runtime.openai.protocol"}
