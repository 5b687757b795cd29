"""LesionMix: what a study with lesions gets, and which mixes are rejected."""

from __future__ import annotations

import numpy as np
import pytest

from training.phantom import LesionMix, study_seed, synthesize_study

SIZE, SLICES = 64, 16


def test_lesion_mix_sets_counts_and_consolidation_presence() -> None:
    mix = LesionMix(
        ggo_count=(2, 2),
        consolidation_probability=1.0,
        consolidation_count=(1, 1),
        consolidation_radius_mm=(10.0, 12.0),
    )
    studies = [synthesize_study(study_seed(5, i), SIZE, SLICES, lesion_mix=mix) for i in range(4)]
    for s in studies:
        cons = [spec for spec in s.lesions if spec.kind == "consolidation"]
        assert len(cons) == 1 and 10.0 <= cons[0].radius_mm <= 12.0
        assert s.lesion_voxels()["consolidation"] > 0  # every study has some
    never = LesionMix(consolidation_probability=0.0)
    for i in range(4):
        s = synthesize_study(study_seed(5, i), SIZE, SLICES, lesion_mix=never)
        assert s.lesion_voxels()["consolidation"] == 0 and s.lesion_voxels()["ggo"] > 0
    # The default mix is the one used when none is given (same study, bit for bit).
    a = synthesize_study(77, SIZE, SLICES)
    b = synthesize_study(77, SIZE, SLICES, lesion_mix=LesionMix())
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.label, b.label)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ggo_count": (3, 1)}, r"'ggo_count' must be \(lo, hi\) with 0 <= lo <= hi"),
        ({"ggo_count": (0, 0)}, "at least one GGO lesion"),
        ({"consolidation_probability": 1.5}, "consolidation_probability"),
        ({"consolidation_radius_mm": (9.0, 9.0)}, r"'consolidation_radius_mm' must be"),
    ],
)
def test_lesion_mix_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LesionMix(**kwargs)
