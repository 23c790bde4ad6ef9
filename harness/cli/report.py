"""``harness report`` and ``harness compare``: tables, plots and statistics from stored results."""
from __future__ import annotations

import sys


def cmd_report(args) -> int:
    import shlex

    from harness.analysis.report import write_report

    command = "harness " + shlex.join(["report", *sys.argv[2:]])
    print(f"report: {write_report(args.results_dir, args.out, command, args.include_degenerate)}")
    return 0


def cmd_compare(args) -> int:
    import shlex

    from harness.analysis.report import write_comparison

    command = "harness " + shlex.join(["compare", *sys.argv[2:]])
    try:
        print(f"comparison: {write_comparison(args.first, args.second, args.out, command)}")
    except ValueError as err:
        print(f"harness compare: {err}", file=sys.stderr)
        return 2
    return 0


def register(commands) -> None:
    report = commands.add_parser("report", help="tables and plots from stored results")
    report.add_argument("results_dir")
    report.add_argument("--out", help="write report.md, report.html, tables/ and plots/ here instead of "
                                      "into RESULTS_DIR (for publishing, e.g. docs/results/NAME)")
    report.add_argument("--include-degenerate", action="store_true",
                        help="keep models that did not learn in the framework verdicts and design comparisons "
                             "(each such comparison then says it compares a failure)")
    report.set_defaults(func=cmd_report)

    compare = commands.add_parser("compare", help="two experiments on the same faces, configuration by "
                                                  "configuration (e.g. pixels vs embeddings)")
    compare.add_argument("first", help="results directory A")
    compare.add_argument("second", help="results directory B (the reference: differences are A − B)")
    compare.add_argument("--out", required=True, help="folder for report.md, report.html, tables/, plots/")
    compare.set_defaults(func=cmd_compare)

