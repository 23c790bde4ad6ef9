"""``harness ensemble``: finished trials' predictions averaged, and scored like a trial."""
from __future__ import annotations

from pathlib import Path

from harness.cli.options import age, probability


def cmd_ensemble(args) -> int:
    from harness.runs import ensemble
    from harness.runs.layout import ENSEMBLES_DIR

    results = Path(args.results_dir)
    if not results.is_dir():
        raise ValueError(f"{results}: no such results directory")
    if args.models and not args.top:
        raise ValueError("--models narrows --top's choice; with --trials name the trials themselves")
    if args.trials:
        groups, selection = ensemble.members_by_ids(results, args.trials), f"trials {' '.join(args.trials)}"
    else:
        groups = ensemble.members_by_rank(results, args.top, args.metric, args.models)
        selection = (f"top {args.top} configurations by mean validation {args.metric}"
                     + (f" among {', '.join(args.models)}" if args.models else ""))
    from harness.paths import child_path

    # A name is one folder under ensembles/, checked like an experiment's name.
    out = Path(args.out) if args.out else child_path(results / ENSEMBLES_DIR, args.name or _ensemble_name(args),
                                                     "--name")
    gate = None
    if args.gate_min_age is not None or args.gate_max_false_accept is not None or args.gate_confidence is not None:
        from harness.models.gate import GateSpec

        given = {"min_age": args.gate_min_age, "max_false_accept": args.gate_max_false_accept,
                 "confidence": args.gate_confidence}
        gate = GateSpec(**{k: v for k, v in given.items() if v is not None})
    scored = ensemble.build(results, groups, out, args.tta, selection, gate)
    for round_, result in scored.items():
        gate = result.get("gate") or {}
        gate_text = ""
        if gate.get("met") and gate.get("test_false_accept_rate") is not None:
            gate_text = (f"  gate at {gate['min_age']:g}: false accepts {gate['test_false_accept_rate']:.1%}, "
                         f"false rejects {gate['test_false_reject_rate']:.1%}")
        years_text = f"  age MAE {result['age_mae']:.2f} years" if "age_mae" in result else ""
        print(f"round {round_}: {result['members']} members  gender {result['gender_accuracy']:.1%}  "
              f"age exact {result['age_exact_accuracy']:.1%}  1-off {result['age_one_off_accuracy']:.1%}  "
              f"joint {result['joint_accuracy']:.1%}{years_text}{gate_text}")
    print(f"ensemble: {out} ({selection}{', tta ' + args.tta if args.tta else ''})")
    return 0


def _ensemble_name(args) -> str:
    if args.trials:
        import hashlib

        return "trials-" + hashlib.sha256(" ".join(sorted(args.trials)).encode()).hexdigest()[:8] + (
            f"-tta-{args.tta}" if args.tta else "")
    return (f"top{args.top}-{args.metric}" + (f"-{'-'.join(args.models)}" if args.models else "")
            + (f"-tta-{args.tta}" if args.tta else ""))


def register(commands) -> None:
    ens = commands.add_parser("ensemble", help="average finished trials' predictions; scored like a trial")
    ens.add_argument("results_dir", help="an experiment's results directory")
    chosen = ens.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--trials", nargs="+", metavar="ID", help="these trials (one split and round)")
    chosen.add_argument("--top", type=int, metavar="K",
                        help="per round, the K configurations best on the validation split")
    ens.add_argument("--models", nargs="+", metavar="NAME",
                     help="--top chooses among these grid models only (say, the age-group models apart from "
                          "the years models, which do not average with them)")
    ens.add_argument("--metric", default="joint_accuracy", help="ranks --top (validation; default joint_accuracy)")
    ens.add_argument("--tta", choices=["flip"], help="members predict each face and its mirror (pixel inputs)")
    ens.add_argument("--gate-min-age", type=age, help="calibrate the door gate for this age (default: "
                                                         "the experiment's gate:)")
    ens.add_argument("--gate-max-false-accept", type=probability,
                     help="target share of under-age validation faces let in (default 0.02)")
    ens.add_argument("--gate-confidence", type=probability,
                     help="judge the target by the false-accept rate's upper confidence bound at this level")
    ens.add_argument("--name", help="folder name under RESULTS_DIR/ensembles (default from the selection)")
    ens.add_argument("--out", help="write here instead of RESULTS_DIR/ensembles/NAME (the report lists "
                                   "only ensembles under RESULTS_DIR/ensembles)")
    ens.set_defaults(func=cmd_ensemble)

