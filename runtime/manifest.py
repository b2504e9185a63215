"""The bundle contract (ARCHITECTURE.md): manifest schema, hashing, verification.

Torch-free: the export writes bundles with it and the device side reads them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = (
    "schema_version", "classes", "class_to_expert", "experts", "backbone", "routing", "logit_scale",
    "preprocess", "text_embeddings", "anchors", "dims", "tools", "source", "files",
)


class BundleError(Exception):
    """A bundle that cannot be used, with what is wrong and what to do."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{str(bundle)!r} is not a bundle: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{str(path)!r} is not valid JSON ({e}); re-export the bundle") from e
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{str(path)!r} lacks {', '.join(missing)}; re-export the bundle with this stpr")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema {manifest['schema_version']} but this stpr reads {SCHEMA_VERSION}; "
            "re-export the bundle with a matching stpr-export"
        )
    return manifest


def verify_bundle(bundle: str | Path) -> dict[str, Any]:
    """Manifest read and every listed file present with its recorded sha256."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    for name, digest in manifest["files"].items():
        f = bundle / name
        if not f.is_file():
            raise BundleError(f"bundle file {name!r} is missing from {str(bundle)!r}; re-export or copy it again")
        if sha256_file(f) != digest:
            raise BundleError(f"bundle file {name!r} does not match its sha256 in the manifest (altered or truncated)")
    return manifest
