"""The clinical summary as a DICOM Structured Report (TID 1500 Measurement Report).

A PACS viewer shows SR numbers beside the images, which a gRPC summary cannot do. One
volumetric measurement group (TID 1411) per SEG segment references that segment of the SEG and
holds its volume in mL; the lung's group also carries the involvement percent and the CT
severity grade. Codes for involvement and grade have no standard concept, so they use the
private scheme ``99PULMOSEG``, declared in the Coding Scheme Identification Sequence as DICOM
requires for private schemes.
"""

from __future__ import annotations

import io
import logging

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from service.core.classes import ClassInfo
from service.core.manifest import ModelManifest
from service.dicom.seg_source import repair_conditional_attributes
from service.quality.clinical import LUNG, ClinicalSummary

logger = logging.getLogger(__name__)

PRIVATE_SCHEME = "99PULMOSEG"
INVOLVEMENT = hd.sr.CodedConcept("INVOLVEMENT", PRIVATE_SCHEME, "Lung involvement by lesions")
SEVERITY = hd.sr.CodedConcept("CTSEVERITY", PRIVATE_SCHEME, "CT severity grade (MosMedData)")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "Percent")
MILLILITER = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
_GRADE_MEANINGS = {
    "CT-0": "CT-0 no lesion",
    "CT-1": "CT-1 involvement under 25 percent",
    "CT-2": "CT-2 involvement 25 to 50 percent",
    "CT-3": "CT-3 involvement 50 to 75 percent",
    "CT-4": "CT-4 involvement 75 percent or more",
}
SR_SERIES_NUMBER = 301
_LO_MAX = 64


def _code(concept: object) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(
        value=concept.value,  # type: ignore[attr-defined]
        scheme_designator=concept.scheme,  # type: ignore[attr-defined]
        meaning=concept.meaning,  # type: ignore[attr-defined]
    )


def _group(
    cls: ClassInfo,
    seg: Dataset,
    summary: ClinicalSummary,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    referenced = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=cls.index,
        source_series=hd.sr.SourceSeriesForSegmentation(
            seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        ),
    )
    measurements = [
        hd.sr.Measurement(
            name=codes.SCT.Volume,
            value=round(summary.class_volumes_ml.get(cls.name, 0.0), 3),
            unit=MILLILITER,
            algorithm_id=algorithm,
        )
    ]
    evaluations = []
    if cls.name == LUNG and summary.involvement_percent is not None and summary.grade:
        measurements.append(
            hd.sr.Measurement(
                name=INVOLVEMENT,
                value=round(summary.involvement_percent, 2),
                unit=PERCENT,
                algorithm_id=algorithm,
            )
        )
        grade = summary.grade.value
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=SEVERITY,
                value=hd.sr.CodedConcept(grade, PRIVATE_SCHEME, _GRADE_MEANINGS[grade]),
            )
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=cls.name),
        referenced_segment=referenced,
        finding_type=_code(cls.property_type),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def _scheme_identification() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "pulmoseg quality and clinical summary"
    item.CodingSchemeResponsibleOrganization = "pulmoseg"
    return item


def build_summary_sr(
    seg_bytes: bytes, summary: ClinicalSummary, manifest: ModelManifest, software_version: str
) -> bytes:
    """The TID 1500 SR (Part-10 bytes) for a study's SEG and its clinical summary."""
    seg = pydicom.dcmread(io.BytesIO(seg_bytes))
    algorithm = hd.sr.AlgorithmIdentification(
        name=manifest.name[:_LO_MAX], version=manifest.version[:_LO_MAX]
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="pulmoseg", model_name=manifest.name[:_LO_MAX]
        ),
    )
    groups = [_group(c, seg, summary, algorithm) for c in manifest.foreground_classes]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pulmoseg",
        is_complete=True,
        series_description=f"pulmoseg summary {manifest.version}"[:_LO_MAX],
    )
    # highdicom copies the SEG's Patient module; its conditions (e.g. a de-identification
    # method when Patient Identity Removed is YES) hold for the SR too, whatever SEG came in.
    repair_conditional_attributes(sr)
    sr.CodingSchemeIdentificationSequence = [_scheme_identification()]
    sr.SoftwareVersions = software_version[:_LO_MAX]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, sr, enforce_file_format=True)
    return buffer.getvalue()
