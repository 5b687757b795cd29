"""Writing a ``(z, y, x)`` volume as NIfTI-1 in the same physical frame as the DICOM series.

The file holds the voxels transposed to ``(x, y, z)`` with a RAS affine (LPS x and y flip
sign), so a voxel maps to the same scanner point in both formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from training.phantom.checks import check_volume


def nifti_affine(spacing_zyx: Sequence[float], origin_lps: Sequence[float]) -> np.ndarray:
    """RAS affine for data stored as ``(x, y, z)``: LPS (x, y) flip sign, z stays."""
    dz, dy, dx = (float(v) for v in spacing_zyx)
    x0, y0, z0 = (float(v) for v in origin_lps)
    return np.array(
        [[-dx, 0.0, 0.0, -x0], [0.0, -dy, 0.0, -y0], [0.0, 0.0, dz, z0], [0.0, 0.0, 0.0, 1.0]]
    )


def write_nifti(
    volume_zyx: np.ndarray, spacing_zyx: Sequence[float], origin_lps: Sequence[float], path: Path
) -> Path:
    """Write a ``(z, y, x)`` volume as NIfTI-1 (dtype kept) with scanner-frame q/s-forms."""
    check_volume("volume_zyx", volume_zyx)
    image = nib.Nifti1Image(
        np.ascontiguousarray(np.transpose(volume_zyx, (2, 1, 0))),
        nifti_affine(spacing_zyx, origin_lps),
    )
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


__all__ = ["nifti_affine", "write_nifti"]
