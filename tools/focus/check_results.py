#!/usr/bin/env python3
"""Gate a focus-validator JUnit report on MUST-level (mandatory) FOCUS requirements.

focus-validator 2.2.1 exits 0 even when rules fail, so CI has to read the
report it writes with `--output-type unittest`. Facts this relies on (read from
focus_validator/outputter/outputter_unittest.py and rules/model-1.2.0.1.json):

* Each <testcase> is named "<ModelRuleId> :: <Function>", e.g.
  "ChargeCategory-C-003-M :: Validation". Errored rules (missing column, SQL
  error) all land in the testsuite "Base-Unknown" as "<ModelRuleId> :: None".
  <failure> = failed, <error> = errored, <skipped> = skipped (not applicable
  under the chosen applicability criteria, MAY/OPTIONAL, or a parent skipped).
* A rule's normative level is ModelRules[id].ValidationCriteria.Keyword in the
  rules model: MUST, MUST NOT, SHOULD, SHOULD NOT, RECOMMENDED, MAY. The id
  suffix (-M/-C/-O) is *not* the level: it says whether the column/attribute
  is Mandatory, Conditional or Optional (e.g. ChargeFrequency-C-000-O is a MUST
  composite, UnitFormat-A-001-M is a SHOULD).
* Composite (AND/OR) rules fail when a child fails, and many MUST composites
  contain SHOULD children. A failed MUST composite whose failed children are
  all non-mandatory (recursively) is therefore reported as a propagated
  warning, not as a mandatory failure.

Exit codes: 0 = no mandatory failure (and, with --strict, no failure at all);
1 = mandatory failure (or any failure with --strict); 2 = unusable input.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET

MANDATORY_KEYWORDS = {"MUST", "MUST NOT"}
BAD = ("failed", "errored")


def load_results(path: str) -> tuple[dict[str, dict], dict[str, str]]:
    root = ET.parse(path).getroot()
    if root.tag != "testsuites":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <testsuites>")
    results: dict[str, dict] = {}
    for tc in root.iter("testcase"):
        name = tc.get("name", "")
        rule_id = name.split(" :: ", 1)[0].strip()
        if tc.find("failure") is not None:
            status, el = "failed", tc.find("failure")
        elif tc.find("error") is not None:
            status, el = "errored", tc.find("error")
        elif tc.find("skipped") is not None:
            status, el = "skipped", tc.find("skipped")
        else:
            status, el = "passed", None
        message = (el.get("message") or "") if el is not None else ""
        prev = results.get(rule_id)
        # A rule appears once; if it ever appears twice keep the worst status.
        if prev is None or (status in BAD and prev["status"] not in BAD):
            results[rule_id] = {"status": status, "message": message}
    return results, dict(root.attrib)


def child_refs(requirement: dict | None) -> list[tuple[str, str | None]]:
    """(ModelRuleId, immediately enclosing AND/OR) for every CheckModelRule."""
    out: list[tuple[str, str | None]] = []

    def walk(node, op):
        if isinstance(node, dict):
            fn = node.get("CheckFunction")
            if fn == "CheckModelRule" and node.get("ModelRuleId"):
                out.append((node["ModelRuleId"], op))
            for v in node.values():
                walk(v, fn if fn in ("AND", "OR") else op)
        elif isinstance(node, list):
            for v in node:
                walk(v, op)

    walk(requirement, None)
    return out


def child_rule_ids(requirement: dict | None) -> list[str]:
    return [rid for rid, _ in child_refs(requirement)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="JUnit XML written by focus-validator --output-type unittest")
    ap.add_argument("--model", required=True, help="rules model JSON (focus_validator/rules/model-*.json)")
    ap.add_argument("--strict", action="store_true", help="treat every failed/errored rule as fatal")
    ap.add_argument("--quiet-warnings", action="store_true", help="do not list non-mandatory failures")
    args = ap.parse_args()

    try:
        results, totals = load_results(args.results)
        with open(args.model, encoding="utf-8") as f:
            rules = json.load(f)["ModelRules"]
    except (OSError, ValueError, ET.ParseError, KeyError, json.JSONDecodeError) as e:
        print(f"focus-check: cannot read inputs: {e}", file=sys.stderr)
        return 2
    if not results:
        print("focus-check: report contains no testcases", file=sys.stderr)
        return 2

    def keyword(rid: str) -> str:
        r = rules.get(rid)
        if r is None:
            return "MUST"  # unknown to the model: be conservative
        return (r.get("ValidationCriteria", {}).get("Keyword") or "MUST").upper()

    # Who references whom, and whether as one alternative of an OR.
    parents: dict[str, list[tuple[str, str | None]]] = {}
    for pid, prule in rules.items():
        for cid, op in child_refs(prule.get("ValidationCriteria", {}).get("Requirement")):
            if cid != pid:
                parents.setdefault(cid, []).append((pid, op))

    def excused_alternative(rid: str) -> bool:
        """Failed, but only ever used as an alternative of an OR that held
        (e.g. InvoiceId-C-004-C "null" vs -C-005-C "not null" under -C-003-C)."""
        refs = parents.get(rid, [])
        return bool(refs) and all(
            op == "OR" and results.get(pid, {}).get("status") == "passed" for pid, op in refs
        )

    memo: dict[str, bool] = {}

    def is_mandatory_failure(rid: str, stack: frozenset = frozenset()) -> bool:
        if rid in memo:
            return memo[rid]
        res = results.get(rid)
        if (res is None or res["status"] not in BAD or keyword(rid) not in MANDATORY_KEYWORDS
                or excused_alternative(rid)):
            memo[rid] = False
            return False
        rule = rules.get(rid, {})
        kids = [c for c in child_rule_ids(rule.get("ValidationCriteria", {}).get("Requirement"))
                if c not in stack and c != rid]
        failed_kids = [c for c in kids if results.get(c, {}).get("status") in BAD]
        if failed_kids:
            verdict = any(is_mandatory_failure(c, stack | {rid}) for c in failed_kids)
        else:
            verdict = True  # failed on its own check (or an errored composite)
        memo[rid] = verdict
        return verdict

    counts = {s: 0 for s in ("passed", "failed", "errored", "skipped")}
    for r in results.values():
        counts[r["status"]] += 1
    bad = sorted(rid for rid, r in results.items() if r["status"] in BAD)
    mandatory = [rid for rid in bad if is_mandatory_failure(rid)]
    others = [rid for rid in bad if rid not in mandatory]

    def describe(rid: str) -> str:
        r = rules.get(rid, {})
        vc = r.get("ValidationCriteria", {})
        text = vc.get("MustSatisfy") or "(rule not in model)"
        msg = results[rid]["message"]
        line = f"  {rid} [{results[rid]['status']}, {keyword(rid)}] {text}"
        if msg and results[rid]["status"] == "errored":
            line += f"\n      -> {msg}"
        return line

    if mandatory:
        print(f"MANDATORY (MUST / MUST NOT) failures: {len(mandatory)}")
        for rid in mandatory:
            print(describe(rid))
    if others and (args.strict or not args.quiet_warnings):
        label = "Other failures (fatal: --strict)" if args.strict else "Non-mandatory failures (warnings)"
        print(f"{label}: {len(others)}")
        for rid in others:
            extra = ""
            if keyword(rid) in MANDATORY_KEYWORDS:
                extra = ("  (alternative of an OR rule that passed)" if excused_alternative(rid)
                         else "  (MUST composite failing only because of non-mandatory children)")
            print(describe(rid) + extra)

    print(
        "FOCUS validation summary: tests={t} passed={p} failed={f} errored={e} skipped={s} "
        "mandatory_failures={m}{strict}".format(
            t=totals.get("tests", len(results)), p=counts["passed"], f=counts["failed"],
            e=counts["errored"], s=counts["skipped"], m=len(mandatory),
            strict=" (strict)" if args.strict else "",
        )
    )
    if mandatory or (args.strict and bad):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
