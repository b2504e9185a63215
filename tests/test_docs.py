"""The docs stand on their own: links resolve inside the repository, no stale pointers."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
# A path written out that climbs out of its folder: "../x", not the "..." of an elided path.
UP_PATH = re.compile(r"(?<![.\w/])(?:\.\./)+[\w./-]*")
# The only public site the README named before it was split (the PyTorch CPU wheel index).
PUBLIC_URLS = {"https://download.pytorch.org/whl/cpu"}
# `stpr-run --serve 8080`'s page on this machine or the device: not a link outside
DEVICE_PAGE = re.compile(r"http://(127\.0\.0\.1|localhost|device):8080[/;]")


def _docs() -> list[Path]:
    """README.md, CONTRIBUTING.md when there is one, and every page under docs/."""
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [p for p in pages if p.is_file()]


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a `[x](y)` in a code block is not a link)."""
    out, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links() -> list[tuple[Path, str]]:
    return [(doc, target) for doc in _docs() for target in LINK.findall(_prose(doc.read_text(encoding="utf-8")))]


def test_slug_follows_github():
    assert _slug("Hot bundle swap (`--watch`)") == "hot-bundle-swap---watch"
    assert _slug("The analytic head (ours; beside the paper's method)") == (
        "the-analytic-head-ours-beside-the-papers-method")
    assert _slug("Table 6: FSSD weight λ") == "table-6-fssd-weight-λ"


def test_no_tracked_file_mentions_the_old_method_file():
    name = ("METHOD" + ".md").encode()  # spelled apart so this file does not match itself
    files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, check=True).stdout
    hits = []
    for rel in filter(None, files.decode().split("\0")):
        path = ROOT / rel
        if not path.is_file():  # deleted in the work tree, or a submodule
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # a binary file
            continue
        if name in data:
            hits.append(rel)
    assert not hits, hits


def test_every_relative_link_resolves_inside_the_repository():
    checked = 0
    for doc, target in _links():
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        where = f"{doc.relative_to(ROOT)}: {target}"
        path, _, anchor = target.partition("#")
        assert not path.startswith(("/", "~", "file:")), f"{where}: an absolute path"
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.is_relative_to(ROOT), f"{where} points outside the repository"
        assert dest.exists(), f"{where} does not exist"
        if anchor:
            assert dest.suffix == ".md", f"{where}: an anchor into a file that is not markdown"
            assert anchor in _anchors(dest), f"{where}: no such heading in {dest.relative_to(ROOT)}"
        checked += 1
    assert checked >= 20  # the README and the docs link to each other


def test_no_link_or_path_points_outside_the_repository():
    for doc in _docs():
        text = doc.read_text(encoding="utf-8")
        for up in UP_PATH.findall(text):
            dest = (doc.parent / up).resolve()
            assert dest.is_relative_to(ROOT), f"{doc.relative_to(ROOT)} names {up}, outside the repository"
        for url in re.findall(r"https?://[^\s)`>\"']+", text):
            assert url in PUBLIC_URLS or DEVICE_PAGE.match(url), \
                f"{doc.relative_to(ROOT)} links {url}, which the README did not"


def test_readme_is_short_and_points_to_every_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    targets = {target.partition("#")[0] for doc, target in _links() if doc.name == "README.md"}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in targets, page.name


@pytest.mark.slow
def test_the_demo_transcript_in_results_is_what_the_demo_prints(tmp_path):
    """docs/results.md shows `stpr-train --out runs/demo`'s report: the demo run here must print it."""
    from click.testing import CliRunner

    from stpr.train.cli import main as train_main

    results = (ROOT / "docs" / "results.md").read_text()
    blocks = re.findall(r"```\n(Classifier: analytic head, mode alone.*?)```", results, re.S)
    assert len(blocks) == 1, "results.md should hold the demo's transcript once"
    res = CliRunner().invoke(train_main, ["--out", str(tmp_path / "demo"), "--quiet"])
    assert res.exit_code == 0, res.output
    printed = [line.rstrip() for line in res.output.splitlines()]
    start = printed.index(blocks[0].splitlines()[0])
    end = next(i for i, x in enumerate(printed) if x.startswith("Routing:"))
    assert printed[start:end + 1] == [line.rstrip() for line in blocks[0].strip().splitlines()]
