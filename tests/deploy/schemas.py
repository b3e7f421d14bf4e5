"""Validate manifests against the schemas the API server uses.

* Custom resources against their CRD's ``openAPIV3Schema``, made structural
  the way the API server prunes: a field no schema names is an error (unless
  ``x-kubernetes-preserve-unknown-fields``). The dask-kubernetes CRDs come
  from the installed wheel; the Prometheus Operator ones are vendored in
  ``tests/deploy/crds`` (see its README for the source).
* Core kinds with ``kubernetes-validate`` (the API's own OpenAPI, strict).
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.33"
VENDORED = Path(__file__).parent / "crds"
DASK_CRDS = (
    "daskcluster.yaml",
    "daskworkergroup.yaml",
    "daskautoscaler.yaml",
    "daskjob.yaml",
)


def crd_docs() -> list[dict[str, Any]]:
    """The dask-kubernetes CRDs from the wheel's Helm chart (its
    ``customresources/*.yaml`` are templates the API server refuses) and the
    vendored Prometheus Operator ones."""
    root = resources.files("dask_kubernetes").joinpath(
        "operator/deployment/helm/dask-kubernetes-operator/crds"
    )
    docs = [yaml.safe_load(root.joinpath(n).read_text()) for n in DASK_CRDS]
    for path in sorted(VENDORED.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Unknown fields become errors, as the API server prunes/rejects them."""
    s = copy.copy(schema)
    if s.get("x-kubernetes-preserve-unknown-fields"):
        return s
    if "properties" in s:
        s["properties"] = {k: _structural(v) for k, v in s["properties"].items()}
        s.setdefault("additionalProperties", False)
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _structural(s["additionalProperties"])
    if isinstance(s.get("items"), dict):
        s["items"] = _structural(s["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [_structural(x) for x in s[key]]
    if (
        s.get("type") == "object"
        and "properties" not in s
        and not any(k in s for k in ("additionalProperties", "anyOf", "allOf", "oneOf"))
    ):
        # an object with no schema of its fields: the server keeps nothing
        # of it unless it preserves unknown fields
        s["additionalProperties"] = False
    return s


OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> structural JSON schema of every known CRD."""
    out = {}
    for crd in crd_docs():
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            api = f"{group}/{v['name']}"
            schema = _structural(v["schema"]["openAPIV3Schema"])
            schema["properties"].update(
                apiVersion={"const": api},
                kind={"const": kind},
                metadata=OBJECT_META,
            )
            schema["required"] = sorted(
                {*schema.get("required", []), "apiVersion", "kind", "metadata"}
            )
            out[(api, kind)] = schema
    return out


def errors(doc: dict[str, Any]) -> list[str]:
    """Every schema error of one manifest (``[]`` when the server accepts it)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = crd_schemas().get(key)
    if schema is not None:
        v = jsonschema.Draft7Validator(schema)
        return [
            f"{doc['kind']} {doc['metadata'].get('name')}: "
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in v.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(map(str, e.path))
        return [f"{doc['kind']} {doc['metadata'].get('name')}: {path}: {e.message}"]
    return []
