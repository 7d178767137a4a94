"""The ``--features`` / ``--device`` / ``--feature-cache`` options of audit and duplicates, and the
one step between loading the inputs and the probes: encode every set in the chosen feature space.

    spec = checked_features(config)           # before any file is read: spec, weights file, device
    encoder = load_encoder(config, spec)      # weights loaded (a mismatch refused), still no data
    feats, notes = encode_sets(encoder, data) # (n, d) unit-norm arrays, cached between runs
"""

from __future__ import annotations

from ..adapters.features import DEVICES, SPACES, FeatureSpec, parse_features
from ..conventions import describe_space
from ._common import option, option_errors

__all__ = ["feature_options", "checked_features", "load_encoder", "encode_sets", "space_text",
           "feature_threshold"]

_HELP = ("feature space the sets are compared in: pixels, or an encoder from a local weights file: "
         + ", ".join(s.spec for k, s in SPACES.items() if k != "pixels")
         + " (docs/adapters/features.md: where each file comes from, its preprocessing and its "
         "copy criterion)")


def feature_options(**cli):
    """The ``features``, ``device`` and ``feature_cache`` fields of a config."""
    return (option("pixels", _HELP, kind="text", metavar="SPACE", **cli),
            option("cpu", "device the feature encoder runs on", choices=DEVICES, **cli),
            option(None, "folder of the feature cache shared between runs, or 'off'",
                   kind="path", metavar="DIR",
                   default_text="$MEMAUDIT_CACHE/features, else $XDG_CACHE_HOME/memaudit/features, "
                   "else ~/.cache/memaudit/features", **cli))


def checked_features(config) -> FeatureSpec:
    """The parsed ``features`` of ``config``, its file and ``device`` checked (one-line errors)."""
    from ..adapters.features import check_device

    with option_errors(config):
        spec = parse_features(getattr(config, "features", "pixels"))
        device = getattr(config, "device", "cpu")
        if device != "cpu" or spec.extractor != "pixels":
            check_device(device)
    return spec


def _cache_dir(config):
    from ..adapters._encoder import default_cache_dir

    value = getattr(config, "feature_cache", None)
    if value is None:
        return default_cache_dir()
    return None if str(value).lower() in ("off", "none") else value


def load_encoder(config, spec: FeatureSpec):
    """The encoder of ``spec`` with its weights loaded, or None for pixels."""
    from ..adapters.features import build_encoder

    if spec.extractor == "pixels":
        return None
    return build_encoder(spec, device=config.device, cache_dir=_cache_dir(config),
                         progress=getattr(config, "progress", None))


def encode_sets(encoder, datasets: dict) -> tuple[dict, list]:
    """Every given set through ``encoder``: name -> (n, d) float32 (None where not given), notes."""
    from ..adapters.features import encode_dataset

    before = encoder.n_encoded
    feats, hits = {}, 0
    for name, ds in datasets.items():
        feats[name] = None if ds is None else encode_dataset(encoder, ds, name)
        hits += 0 if ds is None else encoder.last_cache_hits
    where = "no cache" if encoder.cache_dir is None else f"cache {encoder.cache_dir}"
    notes = [f"features: {encoder.n_encoded - before} image(s) encoded, {hits} read from the "
             f"feature cache ({where})"] + list(encoder.cache_warnings)
    return feats, notes


def space_text(spec: FeatureSpec, encoder, train, metric: str, dim: int | None = None) -> str:
    """The headline's "compared in": the feature space, its file and hash, and the images' space."""
    pixels = describe_space(train.convention, metric)
    if encoder is None:
        return pixels
    images = pixels.rsplit(", ", 1)[0]
    model = f" {spec.model}" if spec.model else ""
    dims = f", {dim}-d" if dim else ""
    return (f"{spec.space.title}{model} from {spec.weights.name} (sha256 "
            f"{encoder.weights_sha256[:12]}){dims}, unit norm, "
            f"{describe_space(None, metric)}; images: {images}")


def feature_threshold(spec: FeatureSpec, method: str, threshold):
    """The duplicates threshold: the given one, else the space's (SSCD: 0.5), else None."""
    if threshold is not None or method != "embedding":
        return threshold
    return spec.space.duplicates_threshold


def label_threshold(result, spec: FeatureSpec, method: str, given):
    """A duplicates result whose threshold came from the space (SSCD 0.5) says so, and why."""
    from dataclasses import fields, replace

    if given is not None or method != "embedding" or spec.space.duplicates_threshold is None:
        return result
    names = {f.name for f in fields(result)}
    if "threshold_source" in names:
        return replace(result, threshold_source=f"{spec.extractor} space: "
                       + SPACES[spec.extractor].criterion.split(":")[0])
    return replace(result, **{k: label_threshold(getattr(result, k), spec, method, given)
                              for k in ("samples", "control") if k in names})
