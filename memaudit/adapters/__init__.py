"""Adapters turn a modality (images, series) into arrays ``(n_items, n_features)`` for the probes."""

from .images import image_layout, pixels, to_display

__all__ = ["pixels", "to_display", "image_layout"]
