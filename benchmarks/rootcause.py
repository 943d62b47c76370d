"""Root-cause classification against real failures labelled from their own bug reports.

    python benchmarks/rootcause.py [--data PATH ...]

Each example in ``benchmarks/data/rootcause.jsonl`` is the failure output (error type,
message, trimmed stack) of one flaky or failing test as it was pasted into a public GitHub
issue or pull request, with the category that the maintainers' own diagnosis or fix points
to. ``benchmarks/data/rootcause-sources.md`` says where the examples come from, how labels
were decided and which public datasets were kept out so they stay free for an independent
check. The classifier never sees the label or the diagnosis, only the failure text.

Two sets are scored in one run. ``rootcause.jsonl`` is the development set: the rules were
written and tuned while reading its errors, so its figures flatter the classifier.
``rootcause-holdout.jsonl`` was gathered the same way, from other projects, by someone who
did not see the classifier; it was first scored once that tuning was done, and no rule was
changed for it: its figures are the ones to trust. Macro-F1 moves a lot on it, as most
categories have only a few answered examples there; read it with the counts beside it.

The classifier may answer ``unknown``; that is an abstention, not an error. So the scores
are taken over the answered examples only: per category precision, recall and F1, their
macro average over the categories that occur among the answered examples, and the overall
precision (share of answers that are right). The share answered ``unknown`` is reported
next to them, because a classifier that abstains on everything hard would otherwise look
perfect. Targets: macro-F1 >= 0.70 and precision >= 0.85 on the answered examples. Every
wrong answer is listed (id, label, answer) so the errors can be read against the sources.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from testlens.core.rootcause import CATEGORIES, Evidence, Failure, classify

DATA = Path(__file__).parent / "data" / "rootcause.jsonl"
HOLDOUT = DATA.with_name("rootcause-holdout.jsonl")
ROLES = {
    DATA.resolve(): "development set, tuned against",
    HOLDOUT.resolve(): "held-out set, never tuned against",
}
FIELDS = ("id", "source", "project", "language", "error_type", "message", "stack", "label", "why")
UNKNOWN = "unknown"
TARGET_MACRO_F1 = 0.70
TARGET_PRECISION = 0.85


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    source: str
    project: str
    language: str
    error_type: str
    message: str
    stack: str
    label: str
    why: str


@dataclass(frozen=True, slots=True)
class Outcome:
    example: Example
    answer: str
    confidence: float


def load(path: Path) -> list[Example]:
    """Read the labelled set, refusing anything malformed.

    A missing or extra field, a non-string value, an unknown label or a repeated id stops the
    run with the line number: a silently skipped line would change the figures unnoticed.
    """
    categories = set(CATEGORIES)
    examples: list[Example] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or set(record) != set(FIELDS):
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}:{number}: expected fields {list(FIELDS)}, got {got}")
        wrong = [name for name in FIELDS if not isinstance(record[name], str)]
        if wrong:
            raise ValueError(f"{path}:{number}: fields {wrong} must be strings")
        if record["label"] not in categories:
            raise ValueError(f"{path}:{number}: unknown label {record['label']!r}")
        if record["id"] in seen:
            raise ValueError(f"{path}:{number}: repeated id {record['id']!r}")
        seen.add(record["id"])
        examples.append(Example(**record))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def run(examples: list[Example]) -> list[Outcome]:
    """Classify each example's failure exactly as the server hands one failure to the core."""
    outcomes = []
    for example in examples:
        failure = Failure(
            error_type=example.error_type, message=example.message, stack=example.stack
        )
        verdict = classify(Evidence(failures=[failure]))
        outcomes.append(Outcome(example, str(verdict.category), float(verdict.confidence)))
    return outcomes


def _ratio(part: float, whole: float) -> float:
    """``part / whole``, or 0 when nothing was predicted or answered (scikit-learn's convention)."""
    return part / whole if whole else 0.0


def report(outcomes: list[Outcome], seconds: float) -> None:
    total = len(outcomes)
    answered = [o for o in outcomes if o.answer != UNKNOWN]
    by_label = Counter(o.example.label for o in outcomes)
    answered_by_label = Counter(o.example.label for o in answered)
    predicted = Counter(o.answer for o in answered)
    correct = Counter(o.answer for o in answered if o.answer == o.example.label)

    print(
        f"{total} examples from {len({o.example.project for o in outcomes})} projects, "
        f"{len(by_label)} categories; classified in {seconds:.2f}s"
    )
    print(
        f"\n{'category':<22} {'support':>7} {'answered':>8} {'unknown':>7} "
        f"{'precision':>9} {'recall':>7} {'F1':>6}"
    )
    f1s = []
    for label in sorted(by_label):
        precision = _ratio(correct[label], predicted[label])
        recall = _ratio(correct[label], answered_by_label[label])
        f1 = _ratio(2 * precision * recall, precision + recall)
        if answered_by_label[label]:
            f1s.append(f1)
        print(
            f"{label:<22} {by_label[label]:>7} {answered_by_label[label]:>8} "
            f"{by_label[label] - answered_by_label[label]:>7} "
            f"{precision:>9.3f} {recall:>7.3f} {f1:>6.3f}"
        )

    macro_f1 = sum(f1s) / len(f1s) if f1s else 0.0
    overall_precision = _ratio(sum(correct.values()), len(answered))
    print(
        f"\nanswered {len(answered)} of {total}; answered unknown {1 - len(answered) / total:.1%}"
    )
    for name, value, target in (
        ("macro-F1 (answered)", macro_f1, TARGET_MACRO_F1),
        ("precision (answered)", overall_precision, TARGET_PRECISION),
    ):
        verdict = "met" if value >= target else "missed"
        print(f"{name:<22} {value:.3f}  target >= {target:.2f}  {verdict}")

    wrong = [o for o in answered if o.answer != o.example.label]
    print(f"\nWrong answers ({len(wrong)})")
    print(f"{'id':<48} {'label':<22} {'answer':<22} {'confidence':>10}")
    for o in sorted(wrong, key=lambda o: (o.example.label, o.example.id)):
        print(f"{o.example.id:<48} {o.example.label:<22} {o.answer:<22} {o.confidence:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        help=f"a labelled set; repeat for several (default {DATA.name} and {HOLDOUT.name})",
    )
    args = parser.parse_args()
    for index, path in enumerate(args.data or [DATA, HOLDOUT]):
        examples = load(path)
        if index:
            print()
        print(f"== {path.name} ({ROLES.get(path.resolve(), 'labelled set')})")
        start = time.perf_counter()
        outcomes = run(examples)
        report(outcomes, time.perf_counter() - start)


if __name__ == "__main__":
    main()
