"""The docs stand on their own: links resolve inside the repository, no stale pointers."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return [ROOT / line for line in out.splitlines()]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text, inside, out = path.read_text(encoding="utf-8"), False, set()
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside and (m := re.match(r"^#+ (.*)", line)):
            out.add(_slug(m.group(1)))
    return out


def test_no_file_mentions_the_reconstruction_outside_the_repository():
    name = "METHOD" + ".md"  # spelled apart so this file does not match itself
    hits = []
    for f in _tracked():
        try:
            if name in f.read_text(encoding="utf-8"):
                hits.append(str(f.relative_to(ROOT)))
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
    assert not hits


def test_every_relative_link_resolves_inside_the_repository():
    assert (ROOT / "CONTRIBUTING.md").is_file()
    checked = 0
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert not Path(path).is_absolute(), (doc.name, target)
            assert dest.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
            assert dest.exists(), f"{doc.name}: {target} does not exist"
            if anchor:
                assert anchor in _anchors(dest), f"{doc.name}: {target}: no such heading"
            checked += 1
    assert checked >= 30  # the README and docs link to each other


def test_readme_is_short_and_points_to_the_docs():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    for page in ("train", "export", "runtime", "results", "benchmarks", "method", "bundle", "learn"):
        assert any(f"docs/{page}.md" in line for line in lines), page
