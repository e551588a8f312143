"""The OpenAPI document matches the route table, validates, and docs/api.md carries its current route list."""

from __future__ import annotations

from pathlib import Path

from openapi_spec_validator import validate

from ivr.api.app import PUBLIC, build_app
from ivr.api.openapi import OPS, markdown, routes, spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_document_is_valid_openapi_and_covers_every_route() -> None:
    app = build_app(None)
    doc = spec(app, PUBLIC)
    validate(doc)
    table = {(m, p) for m, p, _ in routes(app)}
    assert table == set(OPS), f"routes without docs: {table - set(OPS)}; docs without routes: {set(OPS) - table}"
    ops = [(p, m, op) for p, methods in doc["paths"].items() for m, op in methods.items()]
    assert len(ops) == len(table)
    assert len({op["operationId"] for _, _, op in ops}) == len(ops)


def test_roles_in_the_document_are_the_handlers_roles() -> None:
    app = build_app(None)
    doc = spec(app, PUBLIC)
    for method, path, handler in routes(app):
        op = doc["paths"][path][method.lower()]
        if path in PUBLIC:
            assert op["security"] == [] and "x-required-role" not in op
        else:
            assert op["x-required-role"] == getattr(handler, "required_role", "admin"), (method, path)
            assert {"401", "403", "429"} <= set(op["responses"])
    # the routes that change things are never open to viewers (a stream ticket changes nothing: a viewer
    # needs one to watch the live stream)
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if method in ("post", "put", "patch", "delete") and (method, path) != ("post", "/api/v1/stream/ticket"):
                assert op["x-required-role"] in ("supervisor", "admin"), (method, path)


def test_docs_route_table_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- routes:begin -->\n", "<!-- routes:end -->"
    current = text[text.index(begin) + len(begin):text.index(end)]
    assert current == markdown(build_app(None), PUBLIC), \
        "docs/api.md is out of date: regenerate the table with python -m ivr.api.openapi --markdown"
