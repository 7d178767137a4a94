"""Every bad input of every subcommand: one line and exit 1, a usage error, or the right answer."""

from pathlib import Path

import pytest

from bad_inputs import CASES, EXIT_ERROR, EXIT_USAGE, make_data, message, render, run_case

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("bad-inputs"))


def test_the_grid_is_large_and_names_are_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.argv.split()[0] for c in CASES} == {"audit", "duplicates", "subsequences",
                                                  "membership", "demo", "track", "convert"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, files, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_case(case, files, out)
    assert "Traceback" not in stderr
    assert code == case.code, f"exit {code}, stderr: {stderr!r}"
    if code == EXIT_ERROR:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("memaudit: error: "), stderr
        assert case.expect in lines[0]
        assert not (out / "report.json").exists()
    elif code == EXIT_USAGE:
        assert case.expect in stderr
    else:
        assert case.expect in stdout
    assert message(case, files, out, stdout, stderr)


def test_docs_table_is_what_the_commands_print(tmp_path):
    want = render(tmp_path)
    have = DOCS.read_text() if DOCS.exists() else ""
    assert have == want, ("docs/bad-inputs.md is out of date: run "
                          "python tests/bad_inputs.py --write docs/bad-inputs.md")
