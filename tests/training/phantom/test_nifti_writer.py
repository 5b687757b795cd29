"""nifti_affine: the LPS-to-RAS flip that puts NIfTI voxels where the DICOM ones are."""

from __future__ import annotations

import numpy as np

from training.phantom import nifti_affine


def test_nifti_affine_is_lps_to_ras_flip() -> None:
    affine = nifti_affine((5.0, 2.0, 3.0), (-10.0, -20.0, -30.0))
    np.testing.assert_allclose(
        affine, [[-3, 0, 0, 10], [0, -2, 0, 20], [0, 0, 5, -30], [0, 0, 0, 1]]
    )
