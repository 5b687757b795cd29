"""The DICOM SOP Class UIDs pulmoseg decides by, named once (PS3.4 Annex B, PS3.6 Annex A).

Plain strings, so the shared core needs no DICOM library: pydicom compares a ``UID`` equal to
its string and turns a string into a ``UID`` when it is assigned to a UI element.
"""

from __future__ import annotations

from typing import Final

#: The single-frame CT image pulmoseg segments.
CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2"
#: Multi-frame CT, recognised only to say why it is not segmented.
ENHANCED_CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2.1"
#: The DICOMDIR index of a DICOM file-set (PS3.10): never an image, skipped in study folders.
MEDIA_STORAGE_DIRECTORY_STORAGE: Final = "1.2.840.10008.1.3.10"
#: What pulmoseg writes (BINARY or FRACTIONAL segmentation types).
SEGMENTATION_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.66.4"
#: The label-map SEG (Supplement 243), written when LABELMAP is asked for.
LABEL_MAP_SEGMENTATION_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.66.7"
