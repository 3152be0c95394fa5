"""Mutation testing of the money and failure-classification code, within 2 shared cores.

    python tools/mutation.py                          # every module of [tool.mutmut] only_mutate
    python tools/mutation.py services/credits.py      # some modules (paths under neurocards/)
    python tools/mutation.py --sample 30              # a quick look: 30 random mutants (of those not run yet)
    python tools/mutation.py --again                  # after adding tests: the survivors once more
    python tools/mutation.py --all                    # every mutant again, results kept or not
    python tools/mutation.py --report                 # per-module score of what has run so far
    python tools/mutation.py --rules                  # only the RULES table check (seconds)

mutmut 3 (`pip install -e '.[test,mutation]'`) runs under `nice -n 19` with --children workers
(default 2); each mutant runs only the tests that executed its function in mutmut's first, clean
run. Results stay in mutants/: a rerun tests only the mutants that have no result yet (new or
changed functions), plus the survivors with --again.

mutmut does not mutate the regular expressions of the classifier's RULES table, so this tool also
drops every rule, every alternative of its pattern, every code and every error kind in turn and
checks that a named case of tests/test_failures.py notices.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = {1, 3, 24, -24, 36, 152, 255}  # a failing test, pytest's internal error, or a timeout
SURVIVED = {0}
NO_TESTS = {5, 33}


def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(config["tool"]["mutmut"]["only_mutate"])


def module_of(path: str) -> str:
    """neurocards/services/credits.py -> neurocards.services.credits"""
    return path.removesuffix(".py").replace("/", ".")


def resolve(selection: list[str]) -> list[str]:
    modules = configured_modules()
    if not selection:
        return modules
    chosen = [m for m in modules if any(m.endswith(s.removeprefix("neurocards/")) for s in selection)]
    unknown = [s for s in selection if not any(m.endswith(s.removeprefix("neurocards/")) for m in modules)]
    if unknown:
        sys.exit(f"not in [tool.mutmut] only_mutate: {', '.join(unknown)}")
    return chosen


def mutmut(*args: str) -> int:
    exe = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    print("$", " ".join([*nice, exe, *args]), flush=True)
    return subprocess.call([*nice, exe, *args], cwd=ROOT)


@dataclass
class ModuleResult:
    path: str
    counts: Counter[str]
    equivalent: int  # lines marked `# pragma: no mutate` (the reason is in the same comment)
    survivors: list[str]
    not_run: list[str]

    @property
    def tested(self) -> int:
        return self.counts["killed"] + self.counts["survived"] + self.counts["no tests"]

    @property
    def score(self) -> float | None:
        return 100.0 * self.counts["killed"] / self.tested if self.tested else None


def results(modules: list[str]) -> list[ModuleResult]:
    out = []
    for path in modules:
        meta = ROOT / "mutants" / (path + ".meta")
        counts: Counter[str] = Counter()
        survivors: list[str] = []
        not_run: list[str] = []
        if meta.exists():
            for name, code in json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"].items():
                if code is None:
                    counts["not run"] += 1
                    not_run.append(name)
                elif code in KILLED:
                    counts["killed"] += 1
                elif code in SURVIVED:
                    counts["survived"] += 1
                    survivors.append(name)
                elif code in NO_TESTS:
                    counts["no tests"] += 1
                    survivors.append(name)
                else:
                    counts[f"exit {code}"] += 1
        source = (ROOT / path).read_text(encoding="utf-8")
        out.append(ModuleResult(path, counts, len(re.findall(r"#\s*pragma:\s*no mutate", source)), survivors,
                                not_run))
    return out


SQL_WORDS = re.compile(r"\b(select|insert|update|delete|from|where|order by|count|set|and|or|values|returning"
                       r"|limit|coalesce)\b.*\?|\b(select|insert|update|delete|from|where)\b", re.I)
ROW_KEY = re.compile(r"\[\"\w+\"\]")


def changed_lines(path: str) -> dict[str, tuple[str, str]]:
    """mutant name -> (original line, mutated line), read from mutmut's copy of the module."""
    source = (ROOT / "mutants" / path).read_text(encoding="utf-8")
    bodies: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            segment = ast.get_source_segment(source, node) or ""
            bodies[node.name] = segment.splitlines()[1:]  # without the def line (its name differs)
    out = {}
    for name, body in bodies.items():
        base, _, number = name.rpartition("__mutmut_")
        original = bodies.get(base + "__mutmut_orig")
        if number == "orig" or original is None:
            continue
        pairs = [(a, b) for a, b in zip(original, body, strict=False) if a != b]
        if len(pairs) == 1:
            out[module_of(path) + "." + name] = (pairs[0][0].strip(), pairs[0][1].strip())
    return out


def case_only(change: tuple[str, str] | None, path: str = "") -> bool:
    """SQLite ignores the case of keywords and names, sqlite3.Row the case of its keys: a mutant
    that only changes the letter case of such a string (with no quoted value inside) is equivalent.
    In store/ a string with spaces, commas or brackets is a piece of SQL (a continuation line of a
    query need not hold a keyword); a bare word such as a ledger reason is a value and counts."""
    if change is None:
        return False
    old, new = change
    sql_piece = path.startswith("neurocards/store/") and bool(re.search(r'"[^"]*[\s,()=?][^"]*"', old))
    return (old != new and old.lower() == new.lower()
            and re.findall(r"'[^']*'", old) == re.findall(r"'[^']*'", new)  # quoted values unchanged
            and bool(SQL_WORDS.search(old) or ROW_KEY.search(old) or sql_piece))


EVENT_ARG = re.compile(r',?\s*event=(f?"[^"]*"|None)')


def event_only(change: tuple[str, str] | None) -> bool:
    """A mutant that only changes or drops the `event=` text of a job update: that text goes to the
    job_events table, a history nothing in the product reads (a log, left out like log calls)."""
    if change is None:
        return False
    old, new = change
    return "event=" in old and EVENT_ARG.sub("", old).strip() == EVENT_ARG.sub("", new).strip()


def equivalent_by_rule(change: tuple[str, str] | None, path: str) -> bool:
    return case_only(change, path) or event_only(change)


def report(modules: list[str]) -> int:
    rows = results(modules)
    print("| module | mutants | killed | survived | no tests | equivalent (SQL letter case, event text) | not run |"
          " score | lines marked `no mutate` |")
    print("|---|---|---|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    listed: list[tuple[str, str, tuple[str, str] | None]] = []
    for r in rows:
        changes = changed_lines(r.path) if (ROOT / "mutants" / r.path).exists() else {}
        equivalent = [n for n in r.survivors if equivalent_by_rule(changes.get(n), r.path)]
        skipped = [n for n in r.not_run if equivalent_by_rule(changes.get(n), r.path)]  # never run: no need
        real = [n for n in r.survivors if n not in equivalent]
        killed, tested = r.counts["killed"], r.tested - len(equivalent)
        total.update(r.counts)
        total["equivalent"] += len(equivalent)
        total["skipped"] += len(skipped)
        score = f"{100.0 * killed / tested:.1f} %" if tested else "—"
        print(f"| {r.path} | {sum(r.counts.values())} | {killed} | {r.counts['survived']} |"
              f" {r.counts['no tests']} | {len(equivalent) + len(skipped)} | {r.counts['not run'] - len(skipped)} |"
              f" {score} | {r.equivalent} |")
        listed += [(n, "survivor", changes.get(n)) for n in real]
    tested = total["killed"] + total["survived"] + total["no tests"] - total["equivalent"]
    if tested:
        print(f"\nkilled {total['killed']} of {tested} run, non-equivalent mutants: "
              f"{100.0 * total['killed'] / tested:.1f} %; equivalent by rule: {total['equivalent']} survived,"
              f" {total['skipped']} not run; {total['not run'] - total['skipped']} other mutants not run")
    for name, what, change in listed:
        print(f"{what}: {name}" + (f"\n    - {change[0]}\n    + {change[1]}" if change else ""))
    return 0


def exit_codes(modules: list[str]) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for path in modules:
        meta = ROOT / "mutants" / (path + ".meta")
        if meta.exists():
            codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return codes


def sample_names(modules: list[str], n: int, seed: int | None) -> list[str]:
    """N random mutants of those without a result (an unbiased estimate of what a run cut short did
    not reach), or of all mutants once every one has a result."""
    names = sorted(names_to_run(modules) or exit_codes(modules))
    random.Random(seed).shuffle(names)
    return sorted(names[:n])


def names_to_run(modules: list[str], *, again: bool = False, every: bool = False) -> list[str]:
    """The mutants without a result (new or changed functions), with --again the survivors too, with
    --all every one; never those equivalent by rule (SQL letter case, event text): each would cost
    the whole of its tests and can only survive."""
    wanted = {None} | (SURVIVED | NO_TESTS if again else set())
    changes = {name: change for path in modules if (ROOT / "mutants" / path).exists()
               for name, change in changed_lines(path).items()}
    def path_of(name: str) -> str:
        return next(path for path in modules if name.startswith(module_of(path) + "."))

    return sorted(name for name, code in exit_codes(modules).items()
                  if (every or code in wanted) and not equivalent_by_rule(changes.get(name), path_of(name)))


def prepare(children: int) -> None:
    """Make or refresh the mutants and the test map (mutmut resets the results of changed functions
    and maps only new tests), then stop: the name given matches no mutant."""
    mutmut("run", "--max-children", str(children), "neurocards.no_such_module.*")


def check_rules() -> int:
    """Drop each rule, alternative, code and kind of RULES in turn: a named case must fail."""
    sys.path.insert(0, str(ROOT))
    from neurocards.jobs import failures
    from neurocards.providers.base import ProviderError
    from tests.test_failures import CASES

    original = failures.RULES

    def noticed(rules: tuple[failures.Rule, ...]) -> bool:
        failures.RULES = rules
        try:
            return any(failures.classify(ProviderError(c[4], kind=c[1], http_status=c[2], code=c[3])).cls
                       is not c[5] for c in CASES)
        finally:
            failures.RULES = original

    mutants: list[tuple[str, tuple[failures.Rule, ...]]] = []
    for i, rule in enumerate(original):
        def with_rule(new: failures.Rule, i: int = i) -> tuple[failures.Rule, ...]:
            return original[:i] + (new,) + original[i + 1:]

        mutants.append((f"rule {i} dropped", original[:i] + original[i + 1:]))
        if rule.text is not None:
            pattern = rule.text.pattern
            for alternative, rest in _without_each_alternative(pattern):
                mutants.append((f"rule {i}: {alternative!r} dropped",
                                with_rule(failures.Rule(rule.failure, rule.codes, rule.kinds,
                                                        re.compile(rest, re.I)))))
        for code in rule.codes if len(rule.codes) > 1 else ():
            mutants.append((f"rule {i}: code {code} dropped",
                            with_rule(failures.Rule(rule.failure, rule.codes - {code}, rule.kinds, rule.text))))
        for kind in rule.kinds if len(rule.kinds) > 1 or rule.codes else ():
            mutants.append((f"rule {i}: kind {kind} dropped",
                            with_rule(failures.Rule(rule.failure, rule.codes, rule.kinds - {kind}, rule.text))))
        for other in (failures.FailureClass.UNKNOWN, failures.FailureClass.TEMPORARY):
            if other is not rule.failure:
                mutants.append((f"rule {i}: {rule.failure} -> {other}",
                                with_rule(failures.Rule(other, rule.codes, rule.kinds, rule.text))))
    survivors = [name for name, rules in mutants if not noticed(rules)]
    print(f"RULES table: {len(mutants) - len(survivors)} of {len(mutants)} hand-made mutants noticed")
    for name in survivors:
        print("  survivor:", name)
    return 0


def _without_each_alternative(pattern: str) -> list[tuple[str, str]]:
    """Each top-level alternative and each alternative inside a (…|…) group, removed in turn."""
    out = []
    parts = _split_top(pattern)
    if len(parts) > 1:
        out += [(p, "|".join(parts[:j] + parts[j + 1:])) for j, p in enumerate(parts)]
    for group in re.finditer(r"\(([^()]*\|[^()]*)\)", pattern):
        inner = group.group(1).split("|")
        for j, p in enumerate(inner):
            rest = "|".join(inner[:j] + inner[j + 1:])
            out.append((f"{p} in ({group.group(1)})",
                        pattern[:group.start()] + "(" + rest + ")" + pattern[group.end():]))
    return out


def _split_top(pattern: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in pattern:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="paths under neurocards/ (default: all configured)")
    parser.add_argument("--sample", type=int, metavar="N", help="run N random mutants only")
    parser.add_argument("--seed", type=int, help="seed of --sample (default: a new draw each time)")
    parser.add_argument("--children", type=int, default=2, help="parallel mutant runs (default 2)")
    parser.add_argument("--again", action="store_true", help="run the survivors once more (after adding tests)")
    parser.add_argument("--all", action="store_true", help="run every mutant again")
    parser.add_argument("--report", action="store_true", help="only print the scores of what has run")
    parser.add_argument("--rules", action="store_true", help="only check the RULES table")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    modules = resolve(args.modules)
    if args.rules:
        return check_rules()
    if args.report:
        return report(modules)
    code = 0
    prepare(args.children)
    # mutmut reruns every mutant it is given by name, results or not.
    names = (sample_names(modules, args.sample, args.seed) if args.sample
             else names_to_run(modules, again=args.again, every=args.all))
    if names:
        code = mutmut("run", "--max-children", str(args.children), *names)
    else:
        print("every mutant of these modules has a result (--again: the survivors once more)")
    check_rules()
    report(modules)
    return code


if __name__ == "__main__":
    sys.exit(main())
