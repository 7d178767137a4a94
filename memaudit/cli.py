"""The ``memaudit`` command: thin over the library; results to stdout, progress to stderr.

Exit codes: 0 success (and gate passed); 1 bad input or a failed run (a one-line message names
the problem); 2 bad command-line usage; 3 the audit ran but the gated rate is above --fail-above.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from fractions import Fraction

import numpy as np

from . import __version__
from .audit import GATES, AuditConfig, config_defaults, run_audit
from .io import check_writable_dir
from ._validation import check_seed
from .conventions import parse_declarations
from .gate import Gate, verdict_line
from .neighbors import BACKENDS, INDEXES, METRICS
from .probes.duplicates import METHODS as DUP_METHODS

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_GATE = 0, 1, 2, 3
_D = config_defaults()


def _fraction(text: str) -> float:
    """Parse '1/3' or '0.333' into a float."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from exc


def _optional_fraction(text: str):
    return None if text.strip().lower() in ("off", "none") else _fraction(text)


def _size(text: str):
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}") from exc
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}")


def _add_audit_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    io = p.add_argument_group("inputs (a .npy file, a .npz file or FILE.npz:KEY, or a folder of images)")
    io.add_argument("--train", required=required, metavar="PATH", help="training items")
    io.add_argument("--samples", required=required, metavar="PATH", help="generated samples")
    io.add_argument("--holdout", metavar="PATH",
                    help="held-out real items never trained on: the control (recommended)")
    io.add_argument("--resize", type=_size, metavar="HxW",
                    help="image folders: resize every image (e.g. 32 or 32x32)")
    io.add_argument("--mode", choices=["L", "RGB"],
                    help="image folders: read as grayscale (L) or colour (RGB); default: L when "
                    "every image is grayscale")
    io.add_argument("--skip-unreadable", action="store_true",
                    help="image folders: skip files that cannot be decoded (listed in the report) "
                    "instead of failing")
    _add_convention_options(io, "train, samples, holdout")
    pr = p.add_argument_group("probe")
    pr.add_argument("--threshold", type=_fraction, default=_D["threshold"], metavar="K",
                    help="flag d1/d2 < K; in (0, 1), '1/3' or a decimal (default 1/3, "
                    "Bonnaire et al. 2025 Eq. 6)")
    pr.add_argument("--metric", choices=METRICS, default=_D["metric"],
                    help=f"distance (default {_D['metric']}: plain L2, as in the paper)")
    pr.add_argument("--carlini-alpha", type=_optional_fraction, default=_D["carlini_alpha"],
                    metavar="ALPHA", help="Carlini et al. 2023 relative criterion: d1 over the mean "
                    f"distance to the N nearest below ALPHA (default {_D['carlini_alpha']}; 'off' "
                    "to skip)")
    pr.add_argument("--carlini-n", type=int, default=_D["carlini_n"], metavar="N",
                    help=f"nearest training items averaged by that criterion (default {_D['carlini_n']})")
    pr.add_argument("--duplicates", choices=list(DUP_METHODS),
                    help="also report duplicate groups in the training set and samples that copy "
                    "training items, with this method")
    pr.add_argument("--membership", action="store_true",
                    help="also run the sample-only membership attack (distance to the nearest "
                    "generated sample) on training vs held-out items; needs --holdout")
    pr.add_argument("--duplicates-threshold", metavar="T",
                    help="threshold of --duplicates: an integer Hamming distance 0..64 (phash, "
                    "dhash), a number in (0, 1] (embedding, tiled_l2), none for exact (default "
                    "per method: see memaudit duplicates -h)")
    st = p.add_argument_group("statistics")
    st.add_argument("--n-bootstrap", type=int, default=_D["n_bootstrap"], metavar="B",
                    help=f"bootstrap resamples for intervals (default {_D['n_bootstrap']})")
    st.add_argument("--confidence", type=_fraction, default=_D["confidence"],
                    help=f"interval level (default {_D['confidence']})")
    st.add_argument("--seed", type=int, default=_D["seed"],
                    help=f"seed of every random choice (default {_D['seed']})")
    se = p.add_argument_group("search")
    se.add_argument("--backend", choices=BACKENDS, default=_D["backend"],
                    help=f"exact search backend (default {_D['backend']})")
    se.add_argument("--index", choices=INDEXES, default=_D["index"],
                    help="exact search, or an approximate FAISS index whose measured recall is "
                    f"reported (default {_D['index']})")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=required, metavar="DIR",
                     help="folder for report.json and report.html")
    out.add_argument("--gallery", type=int, default=_D["gallery"], metavar="N",
                     help=f"closest pairs shown as images in the HTML report (default {_D['gallery']})")
    out.add_argument("--fail-above", type=_fraction, metavar="RATE",
                     help=f"exit with code {EXIT_GATE} when the gated rate is above RATE "
                     "(a fraction: 0.01 = 1%%)")
    out.add_argument("--gate", choices=GATES, default=_D["gate"],
                     help="figure read by --fail-above: the memorized fraction (rate) or its excess "
                     f"over the held-out control (excess, needs --holdout); default {_D['gate']}")
    out.add_argument("--json", action="store_true",
                     help="print the summary as JSON on stdout instead of text")
    out.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _add_convention_options(group, sets: str) -> None:
    group.add_argument("--range", action="append", metavar="[SET=]LO,HI", dest="ranges",
                       help="declare the value range of an input (SET one of " + sets + "; no "
                       "SET= for all), e.g. samples=-1,1 (diffusers) or samples=0,255 (uint8): "
                       "it is converted to the training set's range. Without it, inputs whose "
                       "ranges differ are refused, never compared as they are. Repeatable")
    group.add_argument("--layout", action="append", metavar="[SET=]HWC|CHW", dest="layouts",
                       help="declare the layout of an input, e.g. samples=CHW (PyTorch's "
                       "channels-first): it is converted to the training set's layout. "
                       "Repeatable")


def _declared(args, sets):
    return (parse_declarations(getattr(args, "ranges", None), sets, "--range"),
            parse_declarations(getattr(args, "layouts", None), sets, "--layout"))


def _duplicates_threshold(args):
    from .probes.duplicates import parse_threshold

    if args.duplicates_threshold is None:
        return None
    if args.duplicates is None:
        raise ValueError("--duplicates-threshold applies to --duplicates METHOD; give the method")
    try:
        return parse_threshold(args.duplicates, args.duplicates_threshold)
    except ValueError as exc:
        raise ValueError(str(exc).replace("--threshold", "--duplicates-threshold")) from None


def _config_from(args, **extra) -> AuditConfig:
    return AuditConfig(
        train=args.train,
        samples=args.samples,
        holdout=args.holdout,
        threshold=args.threshold,
        metric=args.metric,
        backend=args.backend,
        index=args.index,
        carlini_alpha=args.carlini_alpha,
        carlini_n=args.carlini_n,
        n_bootstrap=args.n_bootstrap,
        confidence=args.confidence,
        seed=args.seed,
        resize=args.resize,
        mode=args.mode,
        skip_unreadable=args.skip_unreadable,
        ranges=_declared(args, ("train", "samples", "holdout"))[0] or None,
        layouts=_declared(args, ("train", "samples", "holdout"))[1] or None,
        duplicates=args.duplicates,
        duplicates_threshold=_duplicates_threshold(args),
        membership=args.membership,
        gallery=args.gallery,
        fail_above=args.fail_above,
        gate=args.gate,
        progress=False if args.no_progress else None,
        **extra,
    )


def _summary(report, paths) -> dict:
    d = report.to_dict()
    nr = d["nn_ratio"]
    return {
        "rate": nr["rate"],
        "control_rate": None if nr["control"] is None else nr["control"]["rate"],
        "excess_over_control": nr["excess_over_control"],
        "closer_to_train_than_holdout": nr["closer_to_train_than_holdout"],
        "carlini_rate": None if nr["carlini"] is None else nr["carlini"]["rate"],
        "n_samples": nr["n_samples"],
        "n_memorized": nr["n_memorized"],
        "space": d["space"],
        "gate": d["gate"],
        "report_json": str(paths["json"]),
        "report_html": str(paths["html"]),
    }


def _finish(report, paths, as_json: bool) -> int:
    if as_json:
        print(json.dumps(_summary(report, paths), indent=2))
    else:
        if report.space:
            print(f"compared in: {report.space}")
        for note in report.notes:
            if note.startswith("warning"):
                print(note, file=sys.stderr)
        print(report.nn_ratio.summary())
        for key, res in (report.duplicates or {}).items():
            print(f"duplicates ({key.replace('_', ' ')}): {res.summary()}")
        if report.membership is not None:
            ev = report.membership.evaluation
            print("membership (distance to nearest sample, evaluation half):\n  "
                  + ev.summary().replace("\n", "\n  "))
        if report.gate is not None:
            print(verdict_line(report.gate))
        print(f"report: {paths['json']}\n        {paths['html']}")
    return EXIT_OK if report.passed else EXIT_GATE


def cmd_audit(args) -> int:
    report = run_audit(_config_from(args))
    paths = report.write(args.out)
    return _finish(report, paths, args.json)


def _demo_model():
    """The demo's model, found through the ``memaudit.demos`` entry point (None if unavailable)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="memaudit.demos"):
        if ep.name == "ddpm":
            try:
                return ep.load()
            except ImportError:  # reference_models installed without torch
                return None
    return None


def cmd_demo_model(args, generate) -> int:
    from pathlib import Path

    from .io import atomic_savez
    from .tracking import track_memorization

    out = Path(args.out)
    print(f"demo: training a tiny DDPM on 8 of scikit-learn's digits for {args.steps} steps "
          "(about a minute on 2 cores), then sampling at every checkpoint", file=sys.stderr)
    gen = generate(out / "model", seed=args.seed, steps=args.steps,
                   n_samples=args.samples_per_checkpoint,
                   log=None if args.json else (lambda m: print(f"  {m}", file=sys.stderr)))
    by_step = {s: np.asarray(v).reshape(len(v), -1) for s, v in gen["samples_by_step"].items()}
    curve = track_memorization(by_step, gen["train"].reshape(len(gen["train"]), -1),
                               gen["holdout"].reshape(len(gen["holdout"]), -1),
                               losses=gen["losses"], seed=args.seed)
    last = max(gen["samples_by_step"])
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    atomic_savez(data / "train.npz", x=gen["train"], ids=gen["train_ids"])
    atomic_savez(data / "holdout.npz", x=gen["holdout"], ids=gen["holdout_ids"])
    samples = gen["samples_by_step"][last]
    atomic_savez(data / "samples.npz", x=samples,
                 ids=np.array([f"sample-{i}-step-{last}" for i in range(len(samples))]))
    args.train, args.samples, args.holdout = (str(data / f"{k}.npz") for k in ("train", "samples", "holdout"))
    args.ranges = ["0,1"]  # the demo's digits and samples are pixel values in [0, 1]
    notes = [gen["note"], f"tau_gen = {curve.tau_gen}, tau_mem = {curve.tau_mem}, recommended "
             f"checkpoint (best quality before tau_mem): {curve.recommended}."]
    if curve.tau_mem is not None and (curve.tau_gen is None or curve.tau_mem <= curve.tau_gen):
        notes.append("No safe window in this run: memorization starts (tau_mem) before sample "
                     "quality has converged (tau_gen). Bonnaire et al. 2025 find a window "
                     "tau_gen < tau_mem only for training sets above a critical size n_gm; eight "
                     "digits is far below it, so the recommended checkpoint trades quality for "
                     "privacy.")
    report = run_audit(_config_from(args, notes=notes))
    report.tracking = curve
    report_paths = report.write(out)
    code = _finish(report, report_paths, args.json)
    if not args.json:
        print("memorization over training (f_mem with 95% CI, Fréchet distance to held-out digits):")
        print(curve.summary())
        if len(notes) > 2:
            print(notes[2])
        print(f"the audit of the last checkpoint by hand: memaudit audit --train {args.train} "
              f"--samples {args.samples} --holdout {args.holdout} --duplicates exact --membership "
              f"--out {out}")
    return code


def cmd_demo(args) -> int:
    from pathlib import Path

    from ._validation import check_positive_int, check_seed
    from .demo import make_demo_data, planted_recovery

    Gate(args.fail_above).check(has_control=True, command="demo")  # before any training
    check_seed(args.seed)
    check_positive_int(args.steps, "steps (--steps)")
    check_positive_int(args.samples_per_checkpoint, "samples per checkpoint (--samples-per-checkpoint)", 2)

    if not args.stand_in:
        generate = _demo_model()
        if generate is not None:
            return cmd_demo_model(args, generate)
        print("demo: reference_models or torch is not installed; running the labelled stand-in "
              "instead (pip install 'memaudit[torch]' for the trained model)", file=sys.stderr)
    out = Path(args.out)
    data = make_demo_data(seed=args.seed)
    paths = data.save(out / "data")
    args.train, args.samples, args.holdout = (str(paths[k]) for k in ("train", "samples", "holdout"))
    print(f"demo: scikit-learn digits, {len(data.train)} training, {len(data.holdout)} held-out, "
          f"{len(data.samples)} stand-in samples ({data.planted_positions.size} planted copies); "
          f"inputs written to {out / 'data'}", file=sys.stderr)
    report = run_audit(_config_from(args, notes=[data.note]))
    rec = planted_recovery(data, report.nn_ratio)
    report.notes.append(
        f"Planted copies flagged with the right training id: {rec['planted_flagged_with_right_source']}"
        f" of {rec['planted']}; held-out digits flagged: {rec['fresh_flagged']} of {rec['fresh']}."
    )
    report_paths = report.write(out)
    code = _finish(report, report_paths, args.json)
    if not args.json:
        print(f"planted copies flagged with the right training id: "
              f"{rec['planted_flagged_with_right_source']}/{rec['planted']}; "
              f"held-out digits flagged: {rec['fresh_flagged']}/{rec['fresh']}")
        print(f"the same audit by hand: memaudit audit --train {args.train} --samples "
              f"{args.samples} --holdout {args.holdout} --duplicates exact --membership --out {out}")
    return code


def cmd_duplicates(args) -> int:
    import time

    from .audit import package_versions
    from .probes.duplicates import (find_copies, find_copies_with_control, find_duplicates,
                                    parse_threshold)
    from ._validation import check_same_dim
    from .conventions import harmonize, pixel_scale, require_images
    from .report import write_duplicates_report
    from .sources import load_dataset

    t0 = time.perf_counter()
    threshold = parse_threshold(args.method, args.threshold)
    if args.holdout and not args.samples:
        raise ValueError("--holdout is the control of the samples' copy rate: give --samples too")
    progress = False if args.no_progress else None
    opts = dict(resize=args.resize, mode=args.mode, skip_unreadable=args.skip_unreadable)
    sets = ("train", "samples", "holdout")
    ranges, layouts = _declared(args, sets)
    loaded = {k: load_dataset(getattr(args, k), k, **opts) if getattr(args, k) else None
              for k in sets}
    for k in sets[1:]:
        if loaded[k] is not None:
            check_same_dim(loaded[k].x, loaded["train"].x, k, "train")
    # one convention for every set (refused or converted as in audit); the probe quantizes with
    # the training set's range and precision
    loaded, notes = harmonize(loaded, ranges=ranges, layouts=layouts)
    train, samples, holdout = (loaded[k] for k in sets)
    require_images(args.method, train)
    for note in notes:
        print(note, file=sys.stderr)
    common = dict(threshold=threshold, index=args.index, seed=args.seed, progress=progress,
                  item_shape=train.item_shape, **pixel_scale(train))
    results = {"train": find_duplicates(train.x, args.method, ids=train.ids, **common)}
    control = None
    if holdout is not None:
        control = find_copies_with_control(samples.x, train.x, holdout.x, args.method,
                                           sample_ids=samples.ids, reference_ids=train.ids,
                                           holdout_ids=holdout.ids, **common)
        results["samples_vs_train"] = control.samples
        results["holdout_vs_train"] = control.control
    elif samples is not None:
        results["samples_vs_train"] = find_copies(samples.x, train.x, args.method,
                                                  sample_ids=samples.ids, reference_ids=train.ids,
                                                  **common)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
              if k not in ("func", "command")}
    paths = write_duplicates_report(args.out, results,
                                    {"train": train, "samples": samples, "holdout": holdout},
                                    config, package_versions(), time.perf_counter() - t0,
                                    control=control)
    if args.json:
        out = {k: {kk: vv for kk, vv in v.to_dict().items() if kk not in ("groups", "pairs", "matches")}
               for k, v in results.items()}
        if control is not None:
            out["copy_rate"] = control.to_dict()
        print(json.dumps(out, indent=2))
    else:
        for key, res in results.items():
            print(f"{key}: {res.summary()}")
        if control is not None:
            print(f"copy rate vs held-out control: {control.summary()}")
        for name, ds in (("train", train), ("samples", samples), ("holdout", holdout)):
            if ds is not None and ds.skipped:
                print(f"{name}: skipped {len(ds.skipped)} unreadable file(s), listed in the report")
        print(f"report: {paths['json']}\n        {paths['html']}")
    return EXIT_OK


def _option_int(text, flag: str, minimum: int):
    """An integer command-line value of at least ``minimum``, or a one-line ValueError."""
    if text is None:
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{flag} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{flag} must be at least {minimum}, got {value}")
    return value


def _option_number(text, flag: str):
    """A real number ('0.25', '1/3'), or a one-line ValueError."""
    if text is None:
        return None
    try:
        return float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        try:
            return float(text)  # 'nan', 'inf', '1e-3': refused or accepted by the probe's checks
        except ValueError:
            raise ValueError(f"{flag} must be a number, got {text!r}") from None


def cmd_subsequences(args) -> int:
    import time

    from .adapters.timeseries import as_series_list
    from .audit import package_versions
    from .probes.subsequence import SubsequenceProbe
    from .report_series import write_subsequence_report
    from .sources import load_series

    gate = Gate(args.fail_above, args.gate).check(has_control=args.holdout is not None,
                                                  command="subsequences")
    t0 = time.perf_counter()
    # every option is checked before any file is read; options not given keep the probe's defaults
    given = {"stride": _option_int(args.stride, "--stride", 1),
             "exclusion_zone": _option_int(args.exclusion_zone, "--exclusion-zone", 0),
             "threshold": _option_number(args.threshold, "--threshold"),
             "max_distance": _option_number(args.max_distance, "--max-distance")}
    probe = SubsequenceProbe(_option_int(args.window, "--window", 1), normalize=not args.raw,
                             n_bootstrap=_option_int(args.n_bootstrap, "--n-bootstrap", 1),
                             seed=_option_int(args.seed, "--seed", 0), layout=args.layout,
                             progress=False if args.no_progress else None,
                             **{k: v for k, v in given.items() if v is not None})
    try:
        probe._check_params()
    except (TypeError, ValueError) as exc:
        flag = {"threshold": "--threshold", "max_distance": "--max-distance"}
        msg = str(exc)
        for key, opt in flag.items():
            if msg.startswith(key):
                msg = opt + msg[len(key):]
        raise ValueError(msg) from None
    loaded = {}
    for name in ("train", "samples", "holdout"):
        path = getattr(args, name)
        if path is None:
            continue
        data, ids, desc = load_series(path, name)
        series = as_series_list(data, name, args.layout)
        desc.update(n_series=len(series), channels=series[0].shape[1],
                    lengths=[int(min(s.shape[0] for s in series)), int(max(s.shape[0] for s in series))])
        loaded[name] = (series, ids, desc)
    train, train_ids, _ = loaded["train"]
    samples, sample_ids, _ = loaded["samples"]
    probe.fit(train, ids=train_ids)
    res = probe.score(samples, sample_ids=sample_ids,
                      holdout=loaded["holdout"][0] if "holdout" in loaded else None)
    config = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    config.update(window=probe.length, stride=probe.stride, exclusion_zone=probe.zone_,
                  threshold=probe.threshold, max_distance=probe.max_distance,
                  n_bootstrap=probe.n_bootstrap, seed=probe.seed)
    record = gate.apply("subsequences.series_rate" if args.gate == "rate" else
                        "subsequences.excess_over_control",
                        res.series_rate.value if args.gate == "rate" else
                        (None if res.excess is None else res.excess.value))
    paths = write_subsequence_report(
        args.out, res, samples, train, train_ids=probe.train_ids_,
        sample_ids=sample_ids if sample_ids is not None else list(range(len(samples))),
        inputs={k: v[2] for k, v in loaded.items()}, config=config, versions=package_versions(),
        elapsed=time.perf_counter() - t0, gate=record)
    failed = record is not None and not record["passed"]
    if args.json:
        print(json.dumps({"window_rate": res.window_rate.to_dict(),
                          "series_rate": res.series_rate.to_dict(),
                          "excess": None if res.excess is None else res.excess.to_dict(),
                          "report": {k: str(v) for k, v in paths.items()}, "gate": record,
                          "gate_failed": failed}, indent=2))
    else:
        print(res.summary())
        if record is not None:
            print(verdict_line(record))
        print(f"report: {paths['json']}\n        {paths['html']}")
    return EXIT_GATE if failed else EXIT_OK


def _load_scores(path, name):
    """Scores from .npy (one setting) or .npz (one array per setting) or .csv (one column)."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name}: {p} does not exist")
    if p.suffix not in (".npz", ".npy", ".csv", ".txt"):
        raise ValueError(f"{name}: {p} is not a .npy, .npz or .csv file of scores")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        scores = np.loadtxt(p, delimiter=",", ndmin=1)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{name}: could not read {p} as {p.suffix} scores ({first})") from None
    if scores.ndim != 1:
        raise ValueError(f"{name}: {p.name} holds a table of shape {scores.shape}; give one score "
                         "per line")
    return scores


def cmd_membership(args) -> int:
    import time

    from .audit import package_versions
    from .probes.calibration import calibrated_attack, calibration_split
    from ._validation import check_same_dim
    from .conventions import harmonize
    from .report_membership import write_membership_report
    from .sources import load_dataset

    gate = Gate(args.fail_above).check(has_control=True, command="membership")
    t0 = time.perf_counter()
    inputs = {}
    if args.member_scores or args.nonmember_scores:
        if not (args.member_scores and args.nonmember_scores):
            raise ValueError("give both --member-scores and --nonmember-scores")
        ms = _load_scores(args.member_scores, "member scores")
        ns = _load_scores(args.nonmember_scores, "non-member scores")
        n_m = len(next(iter(ms.values()))) if isinstance(ms, dict) else len(ms)
        n_n = len(next(iter(ns.values()))) if isinstance(ns, dict) else len(ns)
        member_ids = nonmember_ids = None
        settings = ("settings: " + ", ".join(ms)) if isinstance(ms, dict) else "one setting"
        attack = f"scores given ({settings})"
        inputs = {"member_scores": args.member_scores, "nonmember_scores": args.nonmember_scores}
    else:
        if not (args.members and args.nonmembers and args.samples):
            raise ValueError("give --members, --nonmembers and --samples (a sample-only attack), "
                             "or --member-scores and --nonmember-scores")
        if args.attack == "density" and not args.reference:
            raise ValueError("--attack density needs --reference: real data that was not used "
                             "in training and is not among the members or non-members")
        sets = ("members", "nonmembers", "samples", "reference")
        ranges, layouts = _declared(args, sets)
        loaded = {k: None if getattr(args, k) is None else load_dataset(getattr(args, k), k)
                  for k in sets}
        for k in sets[1:]:
            if loaded[k] is not None:
                check_same_dim(loaded[k].x, loaded["members"].x, k, "members")
        loaded, _ = harmonize(loaded, ranges=ranges, layouts=layouts)
        mem, non, gen, ref = (loaded[k] for k in sets)
        inputs = {k: v.describe() for k, v in loaded.items() if v is not None}
        if args.attack == "distance":
            from .probes.sample_attacks import distance_attack

            # each side on its own: a memory-mapped member set is streamed, never concatenated
            progress = False if args.no_progress else None
            ms = distance_attack(mem.x, gen.x, progress=progress)
            ns = distance_attack(non.x, gen.x, progress=progress)
            attack = "distance to the nearest generated sample (GAN-Leaks)"
        else:
            from .probes.sample_attacks import density_ratio_attack

            both = np.concatenate([np.asarray(mem.x), np.asarray(non.x)])
            scores = density_ratio_attack(both, gen.x, ref.x, n_components=args.pca,
                                          seed=args.seed)
            ms, ns = scores[: mem.x.shape[0]], scores[mem.x.shape[0]:]
            attack = "KDE density ratio p_gen / p_ref (DOMIAS style)"
        n_m, n_n = mem.x.shape[0], non.x.shape[0]
        member_ids, nonmember_ids = mem.ids, non.ids
    split = calibration_split(n_m, n_n, fraction=args.calibration_fraction, seed=args.seed,
                              member_ids=member_ids, nonmember_ids=nonmember_ids)
    res = calibrated_attack(ms, ns, split, n_bootstrap=args.n_bootstrap, seed=args.seed)
    config = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    record = gate.apply("membership.evaluation.auc", res.evaluation.auc.value)
    paths = write_membership_report(args.out, res, config=config, versions=package_versions(),
                                    inputs=inputs, attack=attack, elapsed=time.perf_counter() - t0,
                                    gate=record)
    failed = record is not None and not record["passed"]
    if args.json:
        print(json.dumps({"attack": attack, **{k: v for k, v in res.to_dict().items()
                                                if k not in ("split",)},
                          "report": {k: str(v) for k, v in paths.items()}, "gate": record,
                          "gate_failed": failed}, indent=2))
    else:
        print(f"attack: {attack}")
        print(res.summary())
        if record is not None:
            print(verdict_line(record))
        print(f"report: {paths['json']}\n        {paths['html']}")
    return EXIT_GATE if failed else EXIT_OK


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """--out, --json and --no-progress of the duplicates, subsequences and membership commands."""
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the report")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memaudit",
        description="Audit generative models for memorization of their training data.",
        epilog=f"Exit codes: {EXIT_OK} ok, {EXIT_ERROR} bad input or failed run, {EXIT_USAGE} usage "
        f"error, {EXIT_GATE} gate failed (--fail-above).",
    )
    parser.add_argument("--version", action="version", version=f"memaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    audit = sub.add_parser(
        "audit",
        help="nearest-neighbour-ratio audit of generated samples against a training set",
        description=(
            "Flag generated samples that copy a training item: a sample is memorized when its "
            "nearest training item is closer than K times the second nearest (d1/d2 < K, K = 1/3; "
            "Bonnaire et al. 2025 Eq. 6). Reports the memorized fraction with a bootstrap interval, "
            "the same probe on held-out real data as the control and the excess over it, the share "
            "of samples closer to the training set than to the held-out set, and Carlini et al. "
            "2023's relative criterion. Writes DIR/report.json and a self-contained DIR/report.html."
        ),
        epilog=f"Exit codes: {EXIT_OK} ok (gate passed), {EXIT_ERROR} bad input, {EXIT_USAGE} usage "
        f"error, {EXIT_GATE} gated rate above --fail-above. Example: memaudit audit --train "
        "train/ --samples generated/ --holdout test/ --out audit --fail-above 0.01",
    )
    _add_audit_options(audit)
    audit.set_defaults(func=cmd_audit)
    dup = sub.add_parser(
        "duplicates",
        help="duplicate groups in a training set, and samples that copy training items",
        description=(
            "Find duplicates inside the training set (exact pixel copies, perceptual-hash "
            "near-copies, embedding near-duplicates by cosine similarity, or Carlini et al.'s "
            "tiled l2 distance) and, with --samples, "
            "the generated samples that copy training items. Matches form a graph whose connected "
            "components are the duplicate groups. Writes DIR/duplicates.json and DIR/duplicates.html."
        ),
        epilog="Thresholds: exact = identical quantized pixels (no threshold); phash/dhash = "
        "Hamming distance <= T of 64 bits, an integer 0..64, default 10 (imagededup's default, fit "
        "for photographs; digit-like images such as MNIST need 0-1: a warning names the threshold "
        "when groups grow far beyond the copy scale); embedding = cosine similarity >= T in "
        "(0, 1], default 0.95; tiled_l2 = largest RMS pixel difference over a 4x4 grid of tiles "
        "<= T in (0, 1], default 0.15 (pixels in [0, 1]; Carlini et al. 2023's extraction "
        "distance). pHash and dHash are bit for bit those of the imagehash package. With "
        "--holdout, held-out real items go through the same matcher: the copy rate is shown "
        "beside this control and the excess over it.",
    )
    dup.add_argument("--train", required=True, metavar="PATH", help="training items")
    dup.add_argument("--samples", metavar="PATH", help="generated samples to match against train")
    dup.add_argument("--holdout", metavar="PATH",
                     help="held-out real items never trained on: the control of the samples' "
                     "copy rate (needs --samples)")
    dup.add_argument("--method", choices=list(DUP_METHODS), default="phash",
                     help="what counts as a duplicate (default phash)")
    dup.add_argument("--threshold", metavar="T",
                     help="phash/dhash: Hamming distance at most T, an integer from 0 to 64 "
                     "(default 10); embedding: cosine similarity at least T, in (0, 1] (default "
                     "0.95); tiled_l2: tiled l2 distance at most T, in (0, 1] (default 0.15); "
                     "exact: none")
    dup.add_argument("--index", choices=["exact", "ivf"], default="exact",
                     help="embedding: exact range search, or IVF with measured recall")
    dup.add_argument("--resize", type=_size, metavar="HxW", help="image folders: resize every image")
    dup.add_argument("--mode", choices=["L", "RGB"], help="image folders: grayscale or colour")
    dup.add_argument("--skip-unreadable", action="store_true",
                     help="skip image files that cannot be decoded (they are listed in the report)")
    _add_convention_options(dup, "train, samples, holdout")
    dup.add_argument("--seed", type=int, default=_D["seed"],
                     help="seed (IVF training, recall sample, intervals of the copy rates)")
    _add_output_options(dup)
    dup.set_defaults(func=cmd_duplicates)
    from .probes.subsequence import SubsequenceProbe

    _SS = {k: v.default for k, v in inspect.signature(SubsequenceProbe).parameters.items()}
    ss = sub.add_parser(
        "subsequences",
        help="do generated time series replay stretches of training series?",
        description=(
            "Compare every window of every generated series with every window of every training "
            "series (z-normalised Euclidean distance by default, --raw for raw values). Each "
            "generated window gets its nearest training stretch (series and offset), the nearest "
            "stretch outside an exclusion zone around it, and the ratio d1/d2; a window is "
            "memorized when d1/d2 < 1/3. Writes DIR/subsequences.json and a self-contained "
            "DIR/subsequences.html with the closest windows drawn over their matches."
        ),
        epilog="Inputs: .npy or .npz (FILE.npz:KEY; an 'ids' array names the series) holding "
        "(n_series, length) or (n_series, length, channels), or a .csv with one series per row. "
        f"Exit codes: {EXIT_OK} ok, {EXIT_ERROR} bad input, {EXIT_USAGE} usage error, {EXIT_GATE} "
        "gated rate above --fail-above. Example: memaudit subsequences --train train.npy "
        "--samples generated.npy --holdout test.npy --window 64 --out subseq",
    )
    ss.add_argument("--train", required=True, metavar="PATH", help="training series")
    ss.add_argument("--samples", required=True, metavar="PATH", help="generated series")
    ss.add_argument("--holdout", metavar="PATH", help="held-out real series (the control)")
    ss.add_argument("--window", required=True, metavar="L", help="window length in steps")
    ss.add_argument("--stride", metavar="S",
                    help="steps between compared windows of a generated series (default "
                    f"{_SS['stride']}: every "
                    "window, so a replayed stretch of L steps or more is compared whole at any "
                    "offset; with S > 1 only replays of L + S - 1 steps or more are sure to be "
                    "compared, at about 1/S of the cost)")
    ss.add_argument("--raw", action="store_true",
                    help="raw Euclidean distance (default z-normalised: shape only; a generated "
                    "window constant in every channel then has no shape and is counted as not "
                    "evaluable, never flagged)")
    ss.add_argument("--exclusion-zone", metavar="Z",
                    help="the second match may not start within Z steps of the first in the same "
                    "series (default L - 1: no overlap)")
    ss.add_argument("--threshold", metavar="K",
                    help="memorized when d1/d2 < K, K in (0, 1) (default 1/3); a window at "
                    "distance 0 of two training stretches (d1 = d2 = 0) is a copy")
    ss.add_argument("--max-distance", metavar="D",
                    help="also count windows with d1 <= D (D >= 0) as matches")
    ss.add_argument("--layout", choices=["NTC", "NCT"], default="NTC",
                    help="3-D arrays: (series, time, channels) or (series, channels, time)")
    ss.add_argument("--n-bootstrap", default=_D["n_bootstrap"], metavar="N",
                    help=f"bootstrap resamples of the intervals (default {_D['n_bootstrap']})")
    ss.add_argument("--seed", default=_D["seed"], metavar="SEED",
                    help=f"seed of the bootstrap (default {_D['seed']})")
    ss.add_argument("--fail-above", type=_fraction, metavar="RATE",
                    help="exit with code 3 when the gated rate is above RATE")
    ss.add_argument("--gate", choices=["rate", "excess"], default="rate",
                    help="rate: share of generated series with a memorized window; excess: its "
                    "excess over the held-out control (needs --holdout)")
    _add_output_options(ss)
    ss.set_defaults(func=cmd_subsequences)
    mp = sub.add_parser(
        "membership",
        help="can an attacker tell training items from held-out ones? (AUC, TPR at low FPR)",
        description=(
            "Evaluate a membership-inference attack honestly: members and non-members are split "
            "(stratified, seeded) into a calibration half, where the attack's setting (e.g. the "
            "diffusion timestep) and threshold are chosen, and an evaluation half, where the AUC, "
            "the TPR at 1% and 0.1% FPR and the balanced accuracy are reported with bootstrap "
            "intervals beside random guessing. Either give attack scores you computed "
            "(--member-scores/--nonmember-scores; an .npz holds one array per setting), or run "
            "a sample-only attack on data (--members, --nonmembers, --samples). Writes "
            "DIR/membership.json and DIR/membership.html (with the split manifest)."
        ),
        epilog=f"Exit codes: {EXIT_OK} ok, {EXIT_ERROR} bad input, {EXIT_USAGE} usage error, "
        f"{EXIT_GATE} evaluation AUC above --fail-above. Scores: higher means 'member' (pass "
        "minus a loss). Model-based attacks (loss, PIA, SecMI) live in "
        "memaudit.probes.diffusion_attacks; save their scores and pass them here.",
    )
    mp.add_argument("--member-scores", metavar="PATH", help="attack scores of members (.npy/.npz/.csv)")
    mp.add_argument("--nonmember-scores", metavar="PATH", help="attack scores of non-members")
    mp.add_argument("--members", metavar="PATH", help="training items (sample-only attacks)")
    mp.add_argument("--nonmembers", metavar="PATH", help="held-out items from the same law")
    mp.add_argument("--samples", metavar="PATH", help="generated samples")
    mp.add_argument("--attack", choices=["distance", "density"], default="distance",
                    help="sample-only attack: distance to the nearest sample (GAN-Leaks) or KDE "
                    "density ratio (DOMIAS style, needs --reference)")
    mp.add_argument("--reference", metavar="PATH",
                    help="density attack: real data used neither in training nor as candidates")
    mp.add_argument("--pca", type=int, metavar="K", help="density attack: project onto K components")
    mp.add_argument("--calibration-fraction", type=_fraction, default=0.5, metavar="F",
                    help="share of each side used for calibration (default 0.5)")
    mp.add_argument("--n-bootstrap", type=int, default=_D["n_bootstrap"])
    mp.add_argument("--seed", type=int, default=_D["seed"])
    _add_convention_options(mp, "members, nonmembers, samples, reference")
    mp.add_argument("--fail-above", type=_fraction, metavar="AUC",
                    help="exit with code 3 when the evaluation AUC is above AUC")
    _add_output_options(mp)
    mp.set_defaults(func=cmd_membership)
    demo = sub.add_parser(
        "demo",
        help="train a tiny DDPM on bundled digits and audit it (scikit-learn digits)",
        description=(
            "Train a tiny U-Net DDPM (reference_models) on 8 of scikit-learn's bundled 8x8 digits "
            "for a few thousand steps, sample at every checkpoint, follow f_mem and sample quality "
            "over training (tau_gen, tau_mem, the checkpoint to keep) and audit the last "
            "checkpoint against the training digits and 300 held-out ones. Writes the inputs to "
            "DIR/data, the run to DIR/model and the report to DIR. Without torch, or with "
            "--stand-in, it audits a labelled stand-in instead: held-out digits plus copies of "
            "training digits planted at known positions, and prints how many were found."
        ),
    )
    demo.add_argument("--out", default="memaudit-demo", metavar="DIR",
                      help="output folder (default memaudit-demo)")
    demo.add_argument("--seed", type=int, default=_D["seed"],
                      help="seed of the split, the training and the samples (stand-in: the copies)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--fail-above", type=_fraction, metavar="RATE", help="gate, as for audit")
    demo.add_argument("--steps", type=int, default=3000,
                      help="training steps of the demo model (default 3000)")
    demo.add_argument("--samples-per-checkpoint", type=int, default=200, metavar="N",
                      help="DDIM samples drawn at each checkpoint of the demo model (default 200)")
    demo.add_argument("--stand-in", action="store_true",
                      help="skip the model: audit held-out digits plus planted copies (seconds)")
    demo.set_defaults(func=cmd_demo)
    return parser


_DEMO_FIXED = dict(threshold=_D["threshold"], metric=_D["metric"], backend=_D["backend"],
                   index=_D["index"], carlini_alpha=_D["carlini_alpha"], carlini_n=_D["carlini_n"],
                   n_bootstrap=_D["n_bootstrap"], confidence=_D["confidence"], resize=None,
                   mode=None, gallery=_D["gallery"], gate=_D["gate"], no_progress=True,
                   skip_unreadable=False, duplicates="exact", duplicates_threshold=None,
                   membership=True)


class _QuietPipe:
    """stdout that turns a closed pipe (``memaudit ... | head``) into silence, not a traceback.

    The command goes on and returns its real exit code (a failed gate stays a failure); what it
    still prints goes nowhere.
    """

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text):
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._break()
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._break()

    def _break(self):
        self.broken = True
        try:  # the interpreter flushes stdout at exit: point the descriptor at /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if isinstance(exc, MemoryError):
        return ("out of memory; give a memory-mapped .npy file for large sets, or fewer samples "
                "at once")
    return str(exc)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "demo":
        for key, value in _DEMO_FIXED.items():
            setattr(args, key, value)
    stdout = sys.stdout
    sys.stdout = _QuietPipe(stdout)
    try:
        if isinstance(getattr(args, "seed", None), int):  # before any computation
            check_seed(args.seed, "seed (--seed)")
        if getattr(args, "out", None) is not None:
            check_writable_dir(args.out)
        return args.func(args)
    except (ValueError, TypeError, KeyError, OSError, ImportError, RuntimeError,
            MemoryError) as exc:
        print(f"memaudit: error: {_error_text(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("memaudit: interrupted", file=sys.stderr)
        return 130
    finally:
        try:
            sys.stdout.flush()
        finally:
            sys.stdout = stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
