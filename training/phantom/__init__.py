"""Synthetic chest-CT phantom: HU volumes with known lung / GGO / consolidation masks.

No real patient data can be downloaded by this project, so benchmarks and tests run on phantoms.
A phantom is only useful if labels *matter*: lesion size, shape, contrast and count vary, image
noise varies per study, small vessels fall into the GGO HU range through partial volume, and lung
and body shape vary. Everything is plain numpy/scipy and deterministic per seed.

Array axes are ``(z, y, x)`` in the DICOM patient (LPS) frame: ``x`` grows towards the patient's
left (image columns), ``y`` towards posterior (image rows), ``z`` towards superior (slice index
0 is the most inferior slice). Coordinates are millimetres.

Modules, each one job; a module imports only those listed above it:

- ``checks``: argument validation; ``labels``: label values from the class catalogue;
  ``grid``: the millimetre voxel grid and smooth noise
- ``anatomy``: body, lungs, vessel and airway trees; ``lesions``: GGO / consolidation blobs
- ``synthesis``: one study from a seed (:func:`synthesize_study`)
- ``dicom_writer`` / ``nifti_writer``: a volume as a CT series / as NIfTI
- ``dataset``: a data set on disk plus its manifest (:func:`generate_dataset`)
"""

from __future__ import annotations

from training.phantom.dataset import (
    MANIFEST_NAME,
    generate_dataset,
    read_phantom_manifest,
    study_uids,
)
from training.phantom.dicom_writer import default_origin_lps, write_ct_series
from training.phantom.labels import BACKGROUND, CONSOLIDATION, GGO, LUNG
from training.phantom.lesions import LesionMix, LesionSpec
from training.phantom.nifti_writer import nifti_affine, write_nifti
from training.phantom.synthesis import (
    PhantomStudy,
    is_lesion_free,
    phantom_spacing,
    study_seed,
    synthesize_study,
)

__all__ = [
    "BACKGROUND",
    "CONSOLIDATION",
    "GGO",
    "LUNG",
    "MANIFEST_NAME",
    "LesionMix",
    "LesionSpec",
    "PhantomStudy",
    "default_origin_lps",
    "generate_dataset",
    "is_lesion_free",
    "nifti_affine",
    "phantom_spacing",
    "read_phantom_manifest",
    "study_seed",
    "study_uids",
    "synthesize_study",
    "write_ct_series",
    "write_nifti",
]
