"""The README's two commands are what CI and a newcomer run: keep them consistent."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", text, re.S)
    assert m, f"README has no {marker} block"
    return m.group(1)


def test_ci_runs_the_readme_test_command():
    cmd = _block("test-command")
    assert cmd.count("\n") == 0 and "pytest" in cmd
    out = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == cmd


def test_both_commands_pin_torch_first():
    for marker in ("demo-command", "test-command"):
        cmd = _block(marker)
        first, second = cmd.split(" && ")[1:3]
        assert "torch==2.14.1 torchvision==0.29.1" in first and "-c constraints.txt" in first
        assert '-e ".[all]"' in second and "-c constraints.txt" in second
    assert "memaudit demo" in _block("demo-command")
    pins = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
