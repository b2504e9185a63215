"""The bundle contract (docs/bundle.md): manifest schema, hashing, verification.

Torch-free: the export writes bundles with it and the device side reads them.
Every file a manifest names carries its sha256, and the manifest carries the sha256
of its own content (`manifest_sha256`), so a manifest edited or damaged after the
export is refused like an altered model file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..contract import MANIFEST_NAME, STPR_KEYS
from ..errors import BundleError  # noqa: F401 (also imported from here)
from .manifest_fields import STPR_FILE_KEYS, check_fields, needs_stpr_files

SCHEMA_VERSION = 1
REQUIRED_KEYS = (
    "schema_version", "classes", "class_to_expert", "experts", "backbone", "routing", "logit_scale",
    "preprocess", "text_embeddings", "anchors", "dims", "tools", "source", "files", "manifest_sha256",
)
MANIFEST_HASH_KEY = "manifest_sha256"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own hash, in a canonical JSON form
    (sorted keys), so the digest does not depend on indentation or key order."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_HASH_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with `manifest_sha256` set: what the exporter writes."""
    return {**manifest, MANIFEST_HASH_KEY: manifest_digest(manifest)}


def read_manifest(bundle: str | Path, check_hash: bool = True) -> dict[str, Any]:
    """Parse and check the manifest's schema, keys and (with `check_hash`) its own sha256.

    `check_hash=False` only asks "is this a bundle?" (the exporter's --force), so an
    older or damaged bundle can still be replaced."""
    path = Path(bundle) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{str(bundle)!r} is not a bundle: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{str(path)!r} is not valid JSON ({e}); re-export the bundle") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"{str(path)!r} is not a JSON object; re-export the bundle")
    if "schema_version" in manifest and manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema {manifest['schema_version']} but this stpr reads {SCHEMA_VERSION}; "
            "re-export the bundle with a matching stpr-export"
        )
    head_only = manifest.get("head_only") is True  # the analytic head on its own tower: no StPR parts
    optional = ((MANIFEST_HASH_KEY,) if not check_hash else ()) + \
        (STPR_KEYS if head_only else STPR_FILE_KEYS if not needs_stpr_files(manifest) else ())
    missing = [k for k in REQUIRED_KEYS if k not in manifest and k not in optional]
    if missing:
        raise BundleError(f"{str(path)!r} lacks {', '.join(missing)}; re-export the bundle with this stpr")
    if check_hash and manifest[MANIFEST_HASH_KEY] != manifest_digest(manifest):
        raise BundleError(f"{str(path)!r} does not match its manifest_sha256 (edited or damaged after the "
                          "export); re-export the bundle or copy it again")
    return manifest


def verify_bundle(bundle: str | Path) -> dict[str, Any]:
    """Manifest read, its fields checked, and every listed file present with its recorded sha256."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    check_fields(manifest)
    for name, digest in manifest["files"].items():
        f = bundle / name
        if not f.is_file():
            raise BundleError(f"bundle file {name!r} is missing from {str(bundle)!r}; re-export or copy it again")
        if sha256_file(f) != digest:
            raise BundleError(f"bundle file {name!r} does not match its sha256 in the manifest (altered or truncated)")
    return manifest
