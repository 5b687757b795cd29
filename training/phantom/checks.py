"""Argument checks shared by the phantom modules, so every entry point rejects bad input alike."""

from __future__ import annotations

import numpy as np


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"Argument '{name}' must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"Argument '{name}' must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Argument '{name}' must be <= {maximum}, got {value}")


def check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"Argument '{name}' must be a float, got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"Argument '{name}' must be in [0, 1], got {value}")


def check_volume(name: str, volume: object) -> np.ndarray:
    if not isinstance(volume, np.ndarray):
        raise TypeError(f"Argument '{name}' must be a numpy array, got {type(volume).__name__}")
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(
            f"Argument '{name}' must be a non-empty 3-D (z, y, x) array, got shape {volume.shape}"
        )
    return volume
