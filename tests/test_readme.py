"""The README's first two commands and its toy-zoo Python example are what CI and users actually run; its links to
the repository's own files and sections resolve."""
import re
import textwrap
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_first_two_commands_are_demo_and_tests():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    first, second = [line.split("#")[0].strip() for line in block.strip().splitlines()[:2]]
    assert first == "./setup.sh && .venv/bin/tstitch"
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert second in ci.splitlines(), "'.ci/run' must run exactly the README's test command"


def test_python_example_runs():
    code = textwrap.dedent(re.search(r"```python\n(.*?)```", README, re.S).group(1))  # the tour's, in a list item
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["out"].nfe == [8, 12] and scope["images"].shape == (16, 1, 28, 28)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_files_and_sections_resolve():
    """The README and docs/ link to each other's sections (measurements moved to docs/): every relative link names
    a file that exists and, with #anchor, one of its headings."""
    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    assert len(pages) >= 3
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name}: link to missing {target}"
            if anchor:
                headings = re.findall(r"(?m)^#+ (.+)$", file.read_text())
                assert anchor in {slug(h) for h in headings}, f"{page.name}: no section #{anchor} in {file.name}"
            checked += 1
    assert checked >= 20
