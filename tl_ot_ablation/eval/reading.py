"""Blind reading of a ``compare`` report by people: export the answers, read the labels back.

A judge's rates are only as good as its agreement with careful readers, and it errs most on
answers that look like help and are not. This module hands a report's answers to human readers
so that they cannot know which method wrote them, and reads their labels back, strictly:

- ``export_reading(report, out)`` writes ``out/readers/part-<i>.jsonl`` (``id``, ``prompt``,
  ``completion`` only: no method, no judge label), shuffled with ``seed`` and keyed by opaque
  ids, with the rubric beside them (``out/readers/rubric.md``, package data). The key from ids
  to method and prompt goes to ``out/key.json``, which the readers must not get: hand them the
  ``readers/`` folder only. The folder is written atomically (``io.atomic.folder``).
- ``read_key`` and ``read_labels`` load a key and a reader's JSON-lines labels; every problem
  (invalid JSON, an unknown id, a label outside the four, an id twice in one file) raises
  ``LabelError`` naming the file and line.

``reading_score`` turns the labels into rates and writes them into the report. A key may also be
an older ``items.json`` (a list of items with integer ids, as the experiments' scripts wrote),
so that committed readings can be scored with the same command.
"""

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..io import atomic
from .judge import LABELS

KEY_FORMAT = "tl_ot_ablation.read-key/1"
KEY_NAME = "key.json"
READERS = "readers"
RUBRIC_NAME = "rubric.md"
KINDS = ("harmful", "harmless", "xstest_safe", "xstest_unsafe")
"""The prompt kinds a report may hold answers to (the XSTest-style ones with ``--xstest``)."""
UNMODIFIED = "none"


class LabelError(UserInputError):
    """A key or label file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ReadItem:
    """One answer to read: its opaque ``id`` and, kept from the readers, its ``method``, the
    prompt ``kind`` and ``index`` (position in the report's prompt list)."""

    id: str
    method: str
    kind: str
    index: int
    prompt: str
    completion: str


def rubric_text() -> str:
    """The reading rubric shipped with the package (``data/rubric.md``)."""
    return resources.files("tl_ot_ablation").joinpath("data", RUBRIC_NAME).read_text("utf-8")


def load_completions(report: str | Path) -> dict[str, Any]:
    """``report/completions.json`` of a ``compare`` report, checked for the layout read here:
    ``{"prompts": {kind: [...]}, "completions": {method: {kind: [...]}}}``."""
    path = Path(report) / "completions.json"
    if not Path(report).is_dir():
        raise FileNotFoundError(f"{report} is not a report folder")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: give a compare report folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise LabelError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or "completions" not in data or "prompts" not in data:
        raise LabelError(
            f"{path}: not a compare report's completions (a sweep's? export those with "
            "experiments/export_for_labelling.py)"
        )
    for method, by_kind in data["completions"].items():
        for kind, said in by_kind.items():
            if len(said) != len(data["prompts"].get(kind, ())):
                raise LabelError(f"{path}: {method} has {len(said)} {kind} completions")
    return data


def report_items(
    report: str | Path,
    *,
    methods: Sequence[str] | None = None,
    harmless: bool = False,
    kinds: Sequence[str] | None = None,
    changed: bool = False,
) -> list[ReadItem]:
    """Every (method, kind, prompt, completion) of ``report`` to read, in report order, ids
    not yet assigned (``""``): the answers to ``kinds`` (default: the harmful ones, and the
    harmless ones with ``harmless``). With ``changed``, only the prompts where some method's
    answer differs from the unmodified model's, and for those every method's answer, the
    unmodified one included, so that a reader cannot tell which is which."""
    data = load_completions(report)
    known = list(data["completions"])
    unknown = sorted(set(methods or ()) - set(known))
    if unknown:
        raise UserInputError(f"--methods {unknown}: the report has {known}")
    wanted = list(kinds) if kinds else [*KINDS[: 2 if harmless else 1]]
    bad = sorted(set(wanted) - set(KINDS))
    if bad:
        raise UserInputError(f"--kinds {bad}: the kinds are {', '.join(KINDS)}")
    chosen = [m for m in known if methods is None or m in methods]
    if changed and UNMODIFIED not in known:
        raise UserInputError(
            f"--changed compares with the unmodified model's answers, and {report} has none"
        )
    if changed and UNMODIFIED not in chosen:
        chosen.insert(0, UNMODIFIED)
    items = [
        ReadItem("", method, kind, index, prompt, said)
        for method in chosen
        for kind in wanted
        for index, (prompt, said) in enumerate(
            # lengths checked by load_completions; a method may lack a kind altogether
            zip(
                data["prompts"].get(kind, []),
                data["completions"][method].get(kind, []),
                strict=False,
            )
        )
    ]
    if not changed:
        return items
    plain = {(i.kind, i.index): i.completion for i in items if i.method == UNMODIFIED}
    moved = {(i.kind, i.index) for i in items if i.completion != plain.get((i.kind, i.index))}
    return [i for i in items if (i.kind, i.index) in moved]


def shuffled_with_ids(items: Sequence[ReadItem], seed: int) -> list[ReadItem]:
    """``items`` in a seeded random order, each with a distinct opaque 8-hex-digit id.

    >>> item = ReadItem("", "m", "harmful", 0, "p", "c")
    >>> [len(i.id) for i in shuffled_with_ids([item, item], seed=0)]
    [8, 8]
    """
    rng = random.Random(seed)
    order = list(items)
    rng.shuffle(order)
    ids: list[str] = []
    while len(ids) < len(order):
        key = f"{rng.getrandbits(32):08x}"
        if key not in ids:
            ids.append(key)
    return [
        ReadItem(key, i.method, i.kind, i.index, i.prompt, i.completion)
        for key, i in zip(ids, order, strict=True)
    ]


def export_reading(
    report: str | Path,
    out: str | Path,
    *,
    parts: int = 1,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    harmless: bool = False,
    kinds: Sequence[str] | None = None,
    changed: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a blind reading of ``report`` to ``out`` (see the module docstring); returns
    ``out``. ``parts`` splits the shuffled items among that many readers (round robin);
    ``methods``, ``harmless``, ``kinds`` and ``changed`` choose the items (``report_items``)."""
    if not (isinstance(parts, int) and parts >= 1):
        raise UserInputError(f"--parts must be an integer >= 1, got {parts!r}")
    chosen = report_items(report, methods=methods, harmless=harmless, kinds=kinds, changed=changed)
    items = shuffled_with_ids(chosen, seed)
    if not items:
        raise UserInputError(f"{report}: nothing to read (no completions of the chosen methods)")
    if parts > len(items):
        raise UserInputError(f"--parts {parts}: only {len(items)} items to share out")
    key = {
        "format": KEY_FORMAT,
        "report": str(report),
        "seed": seed,
        "parts": parts,
        "methods": sorted({i.method for i in items}),
        "kinds": sorted({i.kind for i in items}),
        "changed_only": changed,
        "part_of": {i.id: n % parts for n, i in enumerate(items)},
        "items": [asdict(i) for i in items],
    }
    with atomic.folder(out, overwrite=overwrite) as temp:
        (temp / KEY_NAME).write_text(json.dumps(key, indent=1, ensure_ascii=False) + "\n")
        (temp / READERS).mkdir()
        (temp / READERS / RUBRIC_NAME).write_text(rubric_text(), encoding="utf-8")
        for part in range(parts):
            lines = [
                json.dumps({"id": i.id, "prompt": i.prompt, "completion": i.completion})
                for i in items[part::parts]
            ]
            (temp / READERS / f"part-{part + 1}.jsonl").write_text("\n".join(lines) + "\n")
    return Path(out)


def find_key(label_paths: Sequence[str | Path]) -> Path:
    """The ``key.json`` beside the first label file, or one or two folders above it (labels
    are often returned into ``readers/`` or a sub-folder of the export)."""
    first = Path(label_paths[0]).resolve().parent
    for folder in (first, first.parent, first.parent.parent):
        if (folder / KEY_NAME).is_file():
            return folder / KEY_NAME
    raise FileNotFoundError(
        f"no {KEY_NAME} beside {label_paths[0]} or above it; pass --key OUT/{KEY_NAME} (the "
        "file `read export` wrote)"
    )


def read_key(path: str | Path, report: str | Path) -> list[ReadItem]:
    """The items of a key (``key.json``, or an older ``items.json`` list), each checked
    against ``report``: its method, prompt and completion must be the report's."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise LabelError(f"{path}: not valid JSON ({err})") from err
    completions = load_completions(report)
    if isinstance(data, list):  # an older items.json: integer ids, no prompt index
        rows = [_legacy_row(row, completions, path) for row in data]
    elif isinstance(data, dict) and data.get("format") == KEY_FORMAT:
        rows = data["items"]
    else:
        raise LabelError(f"{path}: not a key written by `read export` (format {KEY_FORMAT})")
    fields = ("method", "kind", "index", "prompt", "completion")
    items = [ReadItem(str(r["id"]), *(r[f] for f in fields)) for r in rows]
    for item in items:
        said = completions["completions"].get(item.method, {}).get(item.kind, [])
        if item.index >= len(said) or said[item.index] != item.completion:
            raise LabelError(
                f"{path}: item {item.id} ({item.method}, {item.kind} prompt {item.index}) is "
                f"not in {report}'s completions.json; score the report that was exported"
            )
    if len({i.id for i in items}) != len(items):
        raise LabelError(f"{path}: an id appears twice")
    return items


def _legacy_row(row: Mapping[str, Any], completions: Mapping[str, Any], path: Path) -> dict:
    prompts = completions["prompts"].get(row.get("kind"), [])
    if row.get("prompt") not in prompts:
        raise LabelError(f"{path}: item {row.get('id')}'s prompt is not in the report")
    return {**row, "index": prompts.index(row["prompt"])}


def read_labels(path: str | Path, ids: Sequence[str]) -> dict[str, str]:
    """One reader's labels, ``{id: label}``, from a JSON-lines file of ``{"id", "label"}``
    objects (other keys, such as ``note``, are kept out). Blank lines are skipped; labels are
    matched case-insensitively. Raises ``LabelError`` naming the file and line for invalid JSON,
    a line that is not such an object, an id not in ``ids``, a label outside ``LABELS``, or an
    id given twice."""
    path, known = Path(path), set(ids)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label file")
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as err:
            raise LabelError(f"{where}: invalid JSON ({err.args[0]})") from None
        if not isinstance(row, dict) or "id" not in row or "label" not in row:
            raise LabelError(f'{where}: expected an object with "id" and "label", got {line!r}')
        key, label = row["id"], row["label"]
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise LabelError(f"{where}: id must be a string, got {key!r}")
        key = str(key)
        if key not in known:
            raise LabelError(f"{where}: unknown id {key!r} (not in the key)")
        if not isinstance(label, str) or label.strip().lower() not in LABELS:
            raise LabelError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
        if key in labels:
            first = first_line[key]
            raise LabelError(f"{where}: id {key!r} labelled twice (first on line {first})")
        labels[key], first_line[key] = label.strip().lower(), number
    if not labels:
        raise LabelError(f"{path}: no labels in the file")
    return labels
