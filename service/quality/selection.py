"""Which studies get the (costly) consistency check, and with which transform.

Both choices are a deterministic function of the study hash rather than a random draw: a study
sent twice is checked the same way, so the two answers and records agree and a test can predict
the choice. The hash is uniform, so a fraction f selects about f of all studies.
"""

from __future__ import annotations

from service.quality.transforms import ConsistencyTransform

#: Transforms a study may get; all are exact permutations of voxels.
DEFAULT_TRANSFORMS: tuple[ConsistencyTransform, ...] = tuple(ConsistencyTransform)


def _unit_interval(study_hash: str) -> float:
    try:
        return int(study_hash[:8], 16) / 16**8
    except ValueError:
        raise ValueError(
            f"Argument 'study_hash' must be a hex string, got {study_hash!r}."
        ) from None


def is_selected(study_hash: str, fraction: float) -> bool:
    """True for about ``fraction`` of studies (all with 1.0, none with 0.0)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"Argument 'fraction' must be in [0, 1], got {fraction}.")
    return fraction >= 1.0 or _unit_interval(study_hash) < fraction


def transform_for(
    study_hash: str, transforms: tuple[ConsistencyTransform, ...] = DEFAULT_TRANSFORMS
) -> ConsistencyTransform:
    """The transform a study gets, spread evenly over ``transforms`` by its hash."""
    if not transforms:
        raise ValueError("Argument 'transforms' must name at least one transform.")
    try:
        index = int(study_hash[8:16] or study_hash, 16) % len(transforms)
    except ValueError:
        raise ValueError(
            f"Argument 'study_hash' must be a hex string, got {study_hash!r}."
        ) from None
    return transforms[index]
