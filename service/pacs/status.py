"""DICOM status codes the gateway sends and checks, by name (PS3.4 Annex B and C, PS3.7 C).

Named once here so no module carries a bare hex number whose meaning a reader must look up.
"""

from __future__ import annotations

from typing import Final

SUCCESS: Final = 0x0000
#: Storage Service Class: "Refused: Out of Resources" (PS3.4 B.2.3); the spool is full.
OUT_OF_RESOURCES: Final = 0xA700
#: Storage Service Class: "Error: Cannot understand" (PS3.4 B.2.3); e.g. no StudyInstanceUID.
CANNOT_UNDERSTAND: Final = 0xC000
#: General "Processing failure" (PS3.7 C.4.2); the instance could not be written to disk.
PROCESSING_FAILURE: Final = 0x0110

#: Storage warnings: the peer stored the object (coerced, elements discarded, SOP class
#: mismatch), so a delivery that gets one of them is done.
COERCION_OF_DATA_ELEMENTS: Final = 0xB000
ELEMENTS_DISCARDED: Final = 0xB006
DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xB007
STORED_STATUSES: Final = frozenset(
    {SUCCESS, COERCION_OF_DATA_ELEMENTS, ELEMENTS_DISCARDED, DATA_SET_DOES_NOT_MATCH_SOP_CLASS}
)

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4) for refusing a peer that is not on the allow-list.
REJECTED_PERMANENT: Final = 0x01
SOURCE_SERVICE_USER: Final = 0x01
DIAGNOSTIC_NO_REASON: Final = 0x01
DIAGNOSTIC_CALLING_AE_NOT_RECOGNISED: Final = 0x03
