"""The ``memaudit`` command: parsers built from the runners' config dataclasses, and dispatch.

Results go to stdout, progress and warnings to stderr. Every option, its help and its default
come from a field of the command's config (:mod:`memaudit.runners`); this module only says how
argparse reads each kind of value. Exit codes: 0 success (and gate passed); 1 bad input or a
failed run (a one-line message names the problem); 2 bad command-line usage; 3 the run finished
but the gated figure is above --fail-above.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from fractions import Fraction

from . import __version__
from .probes.duplicates import DEFAULTS as DUPLICATE_THRESHOLDS
from .runners import CONFIGS, run_demo

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_GATE = 0, 1, 2, 3


def _fraction(text: str) -> float:
    """Parse '1/3' or '0.333' into a float."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from exc


def _optional_fraction(text: str):
    return None if text.strip().lower() in ("off", "none") else _fraction(text)


def _number(text: str) -> float:
    """A real number: '0.25', '1/3', 'inf', 'nan' (the runner refuses what a setting can't take)."""
    try:
        return _fraction(text)
    except argparse.ArgumentTypeError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _size(text: str):
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}") from exc
    if len(parts) in (1, 2):
        return (parts[0], parts[-1])
    raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}")


# how argparse reads each kind of config field (memaudit.runners._common documents the kinds)
_TYPES = {"path": str, "text": str, "int": int, "fraction": _fraction, "number": _number,
          "optional_fraction": _optional_fraction, "size": _size}


def _kind(f) -> str:
    if "kind" in f.metadata:
        return f.metadata["kind"]
    if "choices" in f.metadata:
        return "choice"
    d = f.default
    return ("switch" if isinstance(d, bool) else "int" if isinstance(d, int)
            else "fraction" if isinstance(d, float) else "text")


def shown_default(f) -> str:
    """How ``--help`` states a field's default: ``default_text``, or the value itself."""
    if "default_text" in f.metadata:
        return f.metadata["default_text"]
    d = [] if f.default is MISSING else f.default
    if isinstance(d, bool):
        return "on" if d else "off"
    if isinstance(d, float) and float(f"{d:g}") != d:
        return str(Fraction(d).limit_denominator(1000))
    return "none" if d is None else f"{d:g}" if isinstance(d, float) else str(d)


def option_help(f) -> str:
    """A field's help with its default stated (or that it is required)."""
    tail = "required" if f.metadata.get("required") else f"default {shown_default(f)}"
    return f"{f.metadata['help']} ({tail})".replace("%", "%%")


def add_fields(parser, config_cls, groups: dict | None = None) -> None:
    """One option per command-line field of ``config_cls``, its default that field's default."""
    made = {}
    for f in fields(config_cls):
        meta = f.metadata
        if meta.get("cli", True) is False:
            continue
        group = meta.get("group")
        if group is not None and group not in made:
            made[group] = parser.add_argument_group((groups or {}).get(group, group))
        target = made.get(group, parser)
        kind = _kind(f)
        kw = dict(dest=f.name, help=option_help(f), default=f.default)
        if kind == "switch":
            kw["action"] = "store_true"
        elif kind == "off":
            kw.update(action="store_const", const=False)
        elif kind == "tristate":  # --flag True, --no-flag False, neither: the field's default
            kw["action"] = argparse.BooleanOptionalAction
        elif kind == "declarations":
            kw.update(action="append", metavar=meta["metavar"], default=None)
        elif kind == "choice":
            kw["choices"] = meta["choices"]
        else:
            kw["type"] = _TYPES[kind]
        if "metavar" in meta and kind != "declarations":
            kw["metavar"] = meta["metavar"]
        if meta.get("required"):
            kw["required"] = True
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        if not flag.startswith("-"):  # a positional argument (memaudit convert SRC)
            for key in ("dest", "required", "default"):
                kw.pop(key, None)
            flag = f.name
        target.add_argument(flag, **kw)
    (made.get("output", parser)).add_argument(
        "--json", action="store_true", help="print the summary as JSON on stdout instead of text "
        "(default off)")


_EXITS = (f"Exit codes: {EXIT_OK} ok, {EXIT_ERROR} bad input, {EXIT_USAGE} usage error, "
          f"{EXIT_GATE} gated figure above --fail-above.")
_DUP_THRESHOLDS = ", ".join(f"{m} {'none' if v[0] is None else v[0]}"
                            for m, v in DUPLICATE_THRESHOLDS.items())
_AUDIT_GROUPS = {"inputs": "inputs (a .npy file, a .npz file or FILE.npz:KEY, or a folder of "
                 "images)", "probe": "probe", "statistics": "statistics", "search": "search",
                 "output": "output", "model": "a diffusers model sampled instead of --samples "
                 "(local folders only; pip install 'memaudit[diffusers]')"}
# command -> (one-line help, description, epilog)
_TEXT = {
    "audit": (
        "nearest-neighbour-ratio audit of generated samples against a training set",
        "Flag generated samples that copy a training item: a sample is memorized when its nearest "
        "training item is closer than K times the second nearest (d1/d2 < K, K = 1/3; Bonnaire et "
        "al. 2025 Eq. 6). Reports the memorized fraction with a bootstrap interval, the same probe "
        "on held-out real data as the control and the excess over it, the share of samples closer "
        "to the training set than to the held-out set, and Carlini et al. 2023's relative "
        "criterion. Writes DIR/report.json and a self-contained DIR/report.html.",
        f"{_EXITS} Example: memaudit audit --train train/ --samples generated/ --holdout test/ "
        "--out audit --fail-above 0.01"),
    "duplicates": (
        "duplicate groups in a training set, and samples that copy training items",
        "Find duplicates inside the training set (exact pixel copies, perceptual-hash near-copies, "
        "embedding near-duplicates by cosine similarity, or Carlini et al.'s tiled l2 distance) "
        "and, with --samples, the generated samples that copy training items. Matches form a "
        "graph whose connected components are the duplicate groups. Writes DIR/duplicates.json "
        "and DIR/duplicates.html.",
        "Thresholds: exact = identical quantized pixels (no threshold); phash/dhash = Hamming "
        "distance <= T of 64 bits, an integer 0..64 (imagededup's default, fit for photographs; "
        "digit-like images such as MNIST need 0-1: a warning names the threshold when groups grow "
        "far beyond the copy scale); embedding = cosine similarity >= T in (0, 1]; tiled_l2 = "
        "largest RMS pixel difference over a 4x4 grid of tiles <= T in (0, 1] (pixels in [0, 1]; "
        f"Carlini et al. 2023's extraction distance). Defaults: {_DUP_THRESHOLDS}. pHash and "
        "dHash are bit for bit those of the imagehash package. With --holdout, held-out real "
        "items go through the same matcher: the copy rate is shown beside this control and the "
        f"excess over it. {_EXITS}"),
    "subsequences": (
        "do generated time series replay stretches of training series?",
        "Compare every window of every generated series with every window of every training "
        "series (z-normalised Euclidean distance by default, --raw for raw values). Each generated "
        "window gets its nearest training stretch (series and offset), the nearest stretch "
        "outside an exclusion zone around it, and the ratio d1/d2; a window is memorized when "
        "d1/d2 < 1/3. Writes DIR/subsequences.json and a self-contained DIR/subsequences.html "
        "with the closest windows drawn over their matches.",
        "Inputs: .npy or .npz (FILE.npz:KEY; an 'ids' array names the series) holding "
        "(n_series, length) or (n_series, length, channels), or a .csv with one series per row; "
        "the training series may also be a folder of .npy shards or a zarr array (equal lengths), "
        "searched shard by shard, on a Dask cluster with --cluster (same results). "
        f"{_EXITS} Example: memaudit subsequences --train train.npy --samples generated.npy "
        "--holdout test.npy --window 64 --out subseq"),
    "membership": (
        "can an attacker tell training items from held-out ones? (AUC, TPR at low FPR)",
        "Evaluate a membership-inference attack honestly: members and non-members are split "
        "(stratified, seeded) into a calibration half, where the attack's setting (e.g. the "
        "diffusion timestep) and threshold are chosen, and an evaluation half, where the AUC, the "
        "TPR at 1% and 0.1% FPR and the balanced accuracy are reported with bootstrap intervals "
        "beside random guessing. Either give attack scores you computed (--member-scores/"
        "--nonmember-scores; an .npz holds one array per setting), or run a sample-only attack on "
        "data (--members, --nonmembers, --samples). Writes DIR/membership.json and "
        "DIR/membership.html (with the split manifest).",
        f"{_EXITS} The gated figure is the evaluation AUC. Scores: higher means 'member' (pass "
        "minus a loss). Model-based attacks (loss, PIA, SecMI) live in "
        "memaudit.probes.diffusion_attacks; save their scores and pass them here."),
    "convert": (
        "turn an image folder, a saved dataset or an array into a memory-mapped .npy with ids",
        "Decode SRC (an image folder, a folder saved with datasets' save_to_disk as DIR or "
        "DIR:COLUMN, a .npy or .npz file) in batches into FILE.npy, memory-mappable, and write "
        "its ids (file names relative to the folder, row numbers) and convention (images: float32 "
        "pixels in [0, 1], channels-last) to FILE.npy.json beside it. Every command reads the "
        "pair as it reads SRC, without decoding again. Both files appear whole or not at all.",
        f"{_EXITS} Example: memaudit convert train_images/ --out train.npy"),
    "demo": (
        "train a tiny DDPM on bundled digits and audit it (scikit-learn digits)",
        "Train a tiny U-Net DDPM (reference_models) on 8 of scikit-learn's bundled 8x8 digits for "
        "a few thousand steps, sample at every checkpoint, follow f_mem and sample quality over "
        "training (tau_gen, tau_mem, the checkpoint to keep) and audit the last checkpoint "
        "against the training digits and 300 held-out ones. Writes the inputs to DIR/data, the "
        "run to DIR/model and the report to DIR. Without torch, or with --stand-in, it audits a "
        "labelled stand-in instead: held-out digits plus copies of training digits planted at "
        "known positions, and prints how many were found.",
        _EXITS),
    "track": (
        "memorization over a training run's checkpoints: f_mem, quality, tau_gen, tau_mem",
        "Sample every checkpoint of a training run with the same seeds: a diffusers run "
        "(RUN/checkpoint-N/unet, and unet_ema when present, reported separately; the scheduler "
        "from RUN/scheduler or --scheduler), or a run an installed run sampler knows (entry point "
        "group memaudit.runs, e.g. reference_models). At each checkpoint: f_mem (d1/d2 < 1/3) "
        "with the held-out control, the Fréchet distance of the samples to the held-out items, "
        "and with --members/--nonmembers the loss, PIA and SecMI attacks' AUC. Then tau_gen "
        "(quality converged), tau_mem (memorization significant) and the checkpoint to keep (best "
        "quality before tau_mem). Writes DIR/tracking.json and DIR/tracking.html.",
        f"{_EXITS} Example: memaudit track --run output_dir --train train/ --holdout test/ "
        "--n-samples 500 --out track"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memaudit",
        description="Audit generative models for memorization of their training data.",
        epilog=f"Exit codes: {EXIT_OK} ok, {EXIT_ERROR} bad input or failed run, {EXIT_USAGE} "
        f"usage error, {EXIT_GATE} gate failed (--fail-above).",
    )
    parser.add_argument("--version", action="version", version=f"memaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (config_cls, _) in CONFIGS.items():
        short, description, epilog = _TEXT[command]
        p = sub.add_parser(command, help=short, description=description, epilog=epilog)
        add_fields(p, config_cls, _AUDIT_GROUPS if command in ("audit", "track") else None)
    return parser


def config_from(args):
    """The command's config dataclass, filled from the parsed command line."""
    config_cls, _ = CONFIGS[args.command]
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)
                         if f.metadata.get("cli", True) is not False})


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def run_command(args) -> int:
    """Run the parsed command: its runner, the summary on stdout, the exit code of the gate."""
    config = config_from(args)
    if args.command == "demo":
        run = run_demo(config, log=_stderr)
    elif args.command == "track":
        run = CONFIGS["track"][1](config, log=_stderr)
    else:
        run = CONFIGS[args.command][1](config)
    for line in run.warnings():
        _stderr(line)
    print(json.dumps(run.to_summary(), indent=2) if args.json else run.summary())
    return EXIT_OK if run.passed else EXIT_GATE


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
    stdout = sys.stdout
    sys.stdout = _QuietPipe(stdout)
    try:
        return run_command(args)
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
