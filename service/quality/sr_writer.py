"""The clinical summary as a DICOM Structured Report (TID 1500 Measurement Report).

A PACS viewer shows SR numbers beside the images, which a gRPC summary cannot do. One
volumetric measurement group (TID 1411) per SEG segment references that segment of the SEG and
holds its volume in mL; the lung's group also carries the involvement percent and the CT
severity grade. Codes for involvement and grade have no standard concept, so they use the
private scheme ``99PULMOSEG``, declared in the Coding Scheme Identification Sequence as DICOM
requires for private schemes.

The applicability checks (``service.quality.applicability``) add one measurement and
qualitative evaluation group (TID 1501, not tied to a segment: they judge the input, not a
label): "input within the model's declared range" Yes/No, and one coded evaluation per reason,
so a viewer shows "this study is outside what the model was made for" beside the volumes.
The quality score (``service.quality.quality_score``) adds one more TID 1501 group: the score
as a unitless measurement and "quality score below the review threshold" Yes/No. The density
bands (``service.quality.density``) add a last TID 1501 group: the lung envelope's volume, its
well-aerated, poorly aerated, non-aerated and compromised shares and the abnormal-density share
in percent, and "answer under-reads the density" Yes/No when the check ran.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from service.core.classes import ClassInfo
from service.core.manifest import ModelManifest
from service.core.study_outcome import ClinicalOutcome, DensityOutcome, UnderReadingOutcome
from service.dicom.seg_source import repair_conditional_attributes
from service.quality.applicability import Applicability, ApplicabilityReason
from service.quality.clinical import LUNG
from service.quality.quality_score import QualityScore

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
APPLICABILITY = hd.sr.CodedConcept("APPLICABILITY", PRIVATE_SCHEME, "Input applicability checks")
WITHIN_RANGE = hd.sr.CodedConcept(
    "INRANGE", PRIVATE_SCHEME, "Input within the model's declared range"
)
OUTSIDE_REASON = hd.sr.CodedConcept(
    "OUTOFRANGE", PRIVATE_SCHEME, "Reason the input is outside the model's range"
)
#: Code values are SH (16 characters at most), so each reason has a short code; the meaning
#: starts with the reason's API name.
_REASON_CODES = {
    ApplicabilityReason.NO_AERATED_LUNG: ("NOAERATEDLUNG", "no aerated lung (not a chest CT)"),
    ApplicabilityReason.PARTIAL_THORAX: ("PARTIALTHORAX", "partial thorax coverage"),
    ApplicabilityReason.SLICE_THICKNESS_OUT_OF_RANGE: (
        "SLICETHICKNESS",
        "slice thickness out of range",
    ),
    ApplicabilityReason.SPACING_OUT_OF_RANGE: ("PIXELSPACING", "pixel spacing out of range"),
    ApplicabilityReason.HU_CALIBRATION: ("HUCALIBRATION", "HU calibration implausible"),
}
QUALITY = hd.sr.CodedConcept("QUALITY", PRIVATE_SCHEME, "Label-free segmentation quality")
QUALITY_SCORE = hd.sr.CodedConcept("QUALITYSCORE", PRIVATE_SCHEME, "Quality score")
QUALITY_FLAGGED = hd.sr.CodedConcept(
    "QUALITYFLAG", PRIVATE_SCHEME, "Quality score below the review threshold"
)
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
DENSITY = hd.sr.CodedConcept("LUNGDENSITY", PRIVATE_SCHEME, "Lung density bands (label-free)")
ENVELOPE_VOLUME = hd.sr.CodedConcept("ENVELOPEVOL", PRIVATE_SCHEME, "Lung envelope volume")
#: The whole envelope's bands in the SR: band name -> (code value, meaning with its HU range).
DENSITY_BANDS = {
    "well_aerated": ("WELLAERATED", "Well-aerated lung -950 to -700 HU"),
    "poorly_aerated": ("POORLYAERATED", "Poorly aerated lung -500 to -100 HU"),
    "non_aerated": ("NONAERATED", "Non-aerated lung -100 to +100 HU"),
    "compromised": ("COMPROMISED", "Compromised lung -500 to +100 HU"),
}
ABNORMAL_DENSITY = hd.sr.CodedConcept(
    "ABNORMALDENS", PRIVATE_SCHEME, "Abnormal density -700 to -250 HU"
)
UNDER_READS = hd.sr.CodedConcept(
    "UNDERREADING", PRIVATE_SCHEME, "Lesions under-read against lung density"
)
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
    summary: ClinicalOutcome,
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
    if cls.name == LUNG and summary.involvement_percent is not None and summary.severity_grade:
        measurements.append(
            hd.sr.Measurement(
                name=INVOLVEMENT,
                value=round(summary.involvement_percent, 2),
                unit=PERCENT,
                algorithm_id=algorithm,
            )
        )
        grade = summary.severity_grade.value
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


def reason_code(reason: ApplicabilityReason) -> hd.sr.CodedConcept:
    """The private code of an applicability reason (value <= 16 characters, SH)."""
    value, meaning = _REASON_CODES[reason]
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, f"{reason.value}: {meaning}"[:_LO_MAX])


def _applicability_group(
    applicability: Applicability, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    yes_no = codes.SCT.Yes if applicability.applicable else codes.SCT.No
    evaluations = [hd.sr.QualitativeEvaluation(name=WITHIN_RANGE, value=yes_no)]
    evaluations += [
        hd.sr.QualitativeEvaluation(name=OUTSIDE_REASON, value=reason_code(reason))
        for reason in applicability.reasons
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="applicability"),
        finding_type=APPLICABILITY,
        algorithm_id=algorithm,
        qualitative_evaluations=evaluations,
    )


def _quality_group(
    score: QualityScore, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The label-free quality score (0 worst, 1 best) and whether it asks for review."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="quality score"),
        finding_type=QUALITY,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=QUALITY_SCORE,
                value=round(score.score, 4),
                unit=NO_UNITS,
                algorithm_id=algorithm,
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=QUALITY_FLAGGED, value=codes.SCT.Yes if score.flagged else codes.SCT.No
            )
        ],
    )


def _density_group(
    density: DensityOutcome,
    under_reading: UnderReadingOutcome | None,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The whole envelope's volume and band shares (percent) and the under-reading verdict."""

    def percent(name: hd.sr.CodedConcept, fraction: float) -> hd.sr.Measurement:
        value = round(100.0 * fraction, 2)
        return hd.sr.Measurement(name=name, value=value, unit=PERCENT, algorithm_id=algorithm)

    whole = next((r for r in density.regions if r.region == "whole"), None)
    fractions = {b.band: b.fraction for b in whole.bands} if whole else {}
    measurements = [
        hd.sr.Measurement(
            name=ENVELOPE_VOLUME,
            value=round(density.envelope_ml, 3),
            unit=MILLILITER,
            algorithm_id=algorithm,
        ),
        *(
            percent(hd.sr.CodedConcept(code, PRIVATE_SCHEME, meaning), fractions[band])
            for band, (code, meaning) in DENSITY_BANDS.items()
            if band in fractions
        ),
        percent(ABNORMAL_DENSITY, density.abnormal_fraction),
    ]
    evaluations = (
        [
            hd.sr.QualitativeEvaluation(
                name=UNDER_READS, value=codes.SCT.Yes if under_reading.flagged else codes.SCT.No
            )
        ]
        if under_reading is not None
        else None
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="lung density"),
        finding_type=DENSITY,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _scheme_identification() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "pulmoseg quality and clinical summary"
    item.CodingSchemeResponsibleOrganization = "pulmoseg"
    return item


def build_summary_sr(
    seg_bytes: bytes,
    summary: ClinicalOutcome,
    manifest: ModelManifest,
    software_version: str,
    applicability: Applicability | None = None,
    score: QualityScore | None = None,
    *,
    density: DensityOutcome | None = None,
    under_reading: UnderReadingOutcome | None = None,
) -> bytes:
    """The TID 1500 SR (Part-10 bytes) for a study's SEG, its clinical summary and, when
    given, the applicability checks, the quality score and the density bands with the
    under-reading verdict (one TID 1501 group each)."""
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
    groups: list[Any] = [_group(c, seg, summary, algorithm) for c in manifest.foreground_classes]
    if applicability is not None:
        groups.append(_applicability_group(applicability, algorithm))
    if score is not None:
        groups.append(_quality_group(score, algorithm))
    if density is not None:
        groups.append(_density_group(density, under_reading, algorithm))
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
