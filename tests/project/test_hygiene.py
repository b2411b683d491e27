"""Repository hygiene: no committed file holds a machine's absolute path, and the README and the
docs say what they mean without the project tracker's words.

Notebook outputs are scrubbed when written (``scripts/execute_notebooks.py``), benchmark reports
record their paths relative to the repository (``benchmarks/_bench.py``), and prose names files
by their repository path.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A machine's absolute path: a user's work, home or temporary folder. The leading slash must not
# continue a relative path ("src/work/" is no machine path).
MACHINE_PATH = re.compile(
    r"(?<![\w.~/\\-])(?:"
    r"/(?:work|root|Users|tmp)/"  # a work area, root's or a macOS home, the temporary folder
    r"|/(?:home)/[\w.-]+/"  # a Linux home: /home/<user>/
    r"|/(?:private/)?(?:var/folders)/"  # macOS temporary folders
    r"|[A-Za-z]:(?:\\)+(?:Users)(?:\\)+"  # a Windows home (a backslash may be JSON-escaped)
    r")"
)
# What is not a machine path although it may look like one. Kept explicit and short:
# - web addresses (https://host/home/...): removed from a line before it is searched;
# - base64 image payloads of notebook outputs, whose alphabet includes "/": skipped;
# - binary files (images, safetensors): skipped.
URL = re.compile(r"https?://[^\s\"'<>)\]`]+")
BASE64_IMAGE = re.compile(r'^\s*"image/(?:png|jpeg|gif|webp)": "')
# - files whose matches are examples, not paths, each with its reason;
EXEMPT_FILES = {"tests/project/test_hygiene.py": "its own examples of what it rejects"}
# - (file, stripped line) pairs a match is allowed on, each with its reason; none today.
ALLOWED: dict[tuple[str, str], str] = {}

# The tracker's words: a numbered issue, session, ticket or pull request ("issue 12",
# "issue-12", "Issue #12", "Session 14", "issues 6 and 12"), or "this issue's" / "the session's".
TRACKER_WORDS = re.compile(
    r"\b(?:issues?|sessions?|tickets?|PRs?|pull requests?)\s*[-#]?\s*\d+"
    r"|\b(?:this|that|the)\s+(?:issue|session|ticket)['’]s\b",
    re.IGNORECASE,
)


def _tracked_files() -> list[Path]:
    """The files ``git ls-files`` lists that exist in the working tree."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not in a git checkout (or git is missing): no committed files to check")
    if Path(top).resolve() != ROOT:
        pytest.skip(f"the git checkout at {top} is not this repository's")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def machine_paths(path: Path, text: str) -> list[str]:
    """``file:line: text`` for each line of ``text`` that holds a machine path."""
    name = path.relative_to(ROOT).as_posix()
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if path.suffix == ".ipynb" and BASE64_IMAGE.match(line):
            continue
        if MACHINE_PATH.search(URL.sub("", line)) and (name, line.strip()) not in ALLOWED:
            found.append(f"{name}:{number}: {line.strip()[:160]}")
    return found


def _checked_files() -> list[tuple[Path, str]]:
    """(path, text) of every committed text file the machine-path check reads."""
    return [
        (path, text)
        for path in _tracked_files()
        if path.relative_to(ROOT).as_posix() not in EXEMPT_FILES
        and (text := _text(path)) is not None
    ]


def test_no_committed_file_holds_a_machine_path() -> None:
    found = [hit for path, text in _checked_files() for hit in machine_paths(path, text)]
    assert not found, (
        "absolute machine paths in committed files (write them relative to the repository; "
        "notebooks: scripts/execute_notebooks.py --scrub-only):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "line",
    [
        "/work/main/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning",
        '"out": "/root/project/benchmarks/results/bridge.json"',
        "see /home/alice/tl_ot_ablation/README.md",
        "tmp_path is /tmp/pytest-of-root/pytest-3/test_x0",
        "/Users/bob/code/x.py:3",
        r'"C:\\Users\\bob\\x.py"',
        "`--out /tmp/compare_before`",
    ],
)
def test_machine_paths_are_found(line: str) -> None:
    assert machine_paths(ROOT / "x.md", line)


@pytest.mark.parametrize(
    "line",
    [
        "#!/usr/bin/env bash",
        'Path("/proc/self/status").read_text()',
        "https://github.com/home/alice/work/x and http://example.org/tmp/y",
        "benchmarks/results/bridge.json, reports/compare-quick, src/work/x.py, ~/.cache",
        "<site-packages>/tqdm/auto.py:21 and <tmp>/ipykernel_1/2.py:18",
        "a framework/ path, /__w/pytorch/pytorch/torch/csrc/x.cpp:822",
    ],
)
def test_legitimate_text_is_not_a_machine_path(line: str) -> None:
    assert not machine_paths(ROOT / "x.md", line)


def test_the_allow_list_has_no_stale_entry() -> None:
    """Each exempt file still exists and each allowed line is still committed; a stale entry
    is removed."""
    assert not [name for name in EXEMPT_FILES if not (ROOT / name).is_file()]
    lines = {
        (path.relative_to(ROOT).as_posix(), line.strip())
        for path, text in _checked_files()
        for line in text.splitlines()
    }
    assert not [entry for entry in ALLOWED if entry not in lines]


def _prose() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def tracker_words(path: Path) -> list[str]:
    """``file:line: text`` for each line of ``path`` that uses the tracker's words."""
    name = path.relative_to(ROOT).as_posix()
    return [
        f"{name}:{number}: {line.strip()[:160]}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TRACKER_WORDS.search(line)
    ]


def test_readme_and_docs_use_no_tracker_words() -> None:
    found = [hit for path in _prose() for hit in tracker_words(path)]
    assert not found, (
        'the README and docs say the thing itself, not "issue 12" or "session 14":\n'
        + "\n".join(found)
    )


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("as issue 12 reported", True),
        ("see issue-12", True),
        ("Issue #5: performance", True),
        ("measured in Session 14", True),
        ("issues 6 and 12: variants", True),
        ("On this session's machine", True),
        ("The issue's targets", True),
        ("The meeting was a dull, uninteresting session.", False),
        ("the run-time limits are not met", False),
        ("a known issue with padding", False),
    ],
)
def test_tracker_words_are_found(text: str, flagged: bool) -> None:
    assert bool(TRACKER_WORDS.search(text)) is flagged
