"""The README's first two commands and its toy-zoo Python example are what CI and users actually run."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_first_two_commands_are_demo_and_tests():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    first, second = [line.split("#")[0].strip() for line in block.strip().splitlines()[:2]]
    assert first == "./setup.sh && .venv/bin/tstitch"
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert second in ci.splitlines(), "'.ci/run' must run exactly the README's test command"


def test_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["out"].nfe == [8, 12] and scope["images"].shape == (16, 1, 28, 28)
