"""The gateway between real peers: Orthanc as the PACS, dcmtk's storescu/echoscu, the real gRPC
service, the SEG read back from Orthanc with highdicom and validated with dciodvfy."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from pacs_peers import (
    GATEWAY_AET,
    ROOT,
    Orthanc,
    add_non_ct_instances,
    delivered_seg,
    delivered_sr,
    echoscu,
    spool_is_empty,
    start_orthanc,
    storescu,
    wait_until,
)
from pydicom.uid import JPEG2000Lossless, RLELossless

from service.core.identifiers import uid_hash


def test_orthanc_pushes_a_study_and_gets_the_seg_back(
    orthanc: Orthanc, orthanc_gateway_port: int, gateway_factory, fresh_study, tmp_path: Path
) -> None:
    study_uid, ct_files = fresh_study()
    extras = add_non_ct_instances(ct_files[0], tmp_path / "extras")
    gateway = gateway_factory(port=orthanc_gateway_port).start()
    orthanc_study = orthanc.upload(ct_files + extras)

    # As a PACS administrator would (or an auto-routing rule): send the study to 'pulmoseg'.
    orthanc.rest("POST", "/modalities/pulmoseg/store", orthanc_study)

    seg = delivered_seg(orthanc, study_uid, ct_files)
    assert seg.SeriesDescription
    assert delivered_sr(orthanc, study_uid, seg).StudyInstanceUID == study_uid
    wait_until(lambda: spool_is_empty(gateway), 10, "an empty spool")
    assert gateway.metric("pulmoseg_pacs_instances_received_total") == len(ct_files) + 3
    gateway.wait_for_metric("pulmoseg_pacs_studies_completed_total", 1, outcome="delivered")
    assert gateway.metric("pulmoseg_pacs_associations_total", result="accepted") >= 1
    gateway.wait_for_metric(
        "pulmoseg_pacs_sends_total", 1, destination=orthanc.destination, result="success"
    )
    log = gateway.log()
    assert f"uploading {len(ct_files)} CT instance(s), 3 other instance(s) left out" in log
    assert uid_hash(study_uid) in log
    header = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    for identifier in (str(header.PatientName), str(header.PatientID), study_uid):
        assert identifier not in log


def send_rle_and_jpeg2000(port: int, files: list[Path]) -> None:
    """Half the study RLE-compressed, half JPEG 2000 lossless, each half in its own association
    that proposes only that transfer syntax and the uncompressed ones."""
    rle = [f for i, f in enumerate(files) if i % 2 == 0]
    j2k = [f for i, f in enumerate(files) if i % 2 == 1]
    for part, option in ((rle, "-xr"), (j2k, "-xv")):
        sent = storescu(port, part, options=(option,))
        assert sent.returncode == 0, sent.stderr
        assert "Converting transfer syntax" not in sent.stdout + sent.stderr


def test_storescu_sends_a_compressed_study_and_a_resend_is_not_segmented_again(
    orthanc: Orthanc, gateway_factory, fresh_study
) -> None:
    study_uid, ct_files = fresh_study([RLELossless, JPEG2000Lossless])
    gateway = gateway_factory().start()

    send_rle_and_jpeg2000(gateway.port, ct_files)
    delivered_seg(orthanc, study_uid, ct_files)
    wait_until(lambda: spool_is_empty(gateway), 10, "an empty spool")

    send_rle_and_jpeg2000(gateway.port, ct_files)
    wait_until(
        lambda: gateway.metric("pulmoseg_pacs_studies_completed_total", outcome="duplicate"),
        30,
        "the resent study to be recognised as a duplicate",
    )
    assert len(orthanc.seg_instances(study_uid)) == 1
    assert gateway.metric("pulmoseg_pacs_segment_calls_total", result="success") == 1
    wait_until(lambda: spool_is_empty(gateway), 10, "an empty spool")


def test_echo_and_the_calling_ae_allow_list(gateway_factory, fresh_study) -> None:
    gateway = gateway_factory().start()
    assert echoscu(gateway.port, "STORESCU").returncode == 0

    refused = echoscu(gateway.port, "INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout

    _, ct_files = fresh_study()
    stored = storescu(gateway.port, ct_files[:2], calling_aet="INTRUDER")
    assert stored.returncode != 0
    assert gateway.metric("pulmoseg_pacs_associations_total", result="rejected") == 2
    assert gateway.metric("pulmoseg_pacs_instances_received_total") == 0
    assert gateway.spool_files() == []


def test_the_host_allow_list_refuses_other_addresses(gateway_factory) -> None:
    gateway = gateway_factory(allowed_hosts=["192.0.2.1"]).start()  # TEST-NET-1, not loopback
    refused = echoscu(gateway.port, "STORESCU")
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stderr + refused.stdout
    assert "host not on the allow-list" in gateway.log()


def test_the_seg_can_go_back_by_dicomweb_stow_rs(
    orthanc: Orthanc, gateway_factory, fresh_study
) -> None:
    study_uid, ct_files = fresh_study()
    gateway = gateway_factory(destinations=[], stow_url=orthanc.dicomweb_url).start()

    assert storescu(gateway.port, ct_files).returncode == 0
    seg = delivered_seg(orthanc, study_uid, ct_files)
    delivered_sr(orthanc, study_uid, seg)
    gateway.wait_for_metric(
        "pulmoseg_pacs_sends_total", 1, destination=orthanc.dicomweb_url, result="success"
    )
    wait_until(lambda: spool_is_empty(gateway), 10, "an empty spool")


def test_the_documented_orthanc_lua_rule_routes_a_new_ct_study(
    tmp_path: Path, gateway_factory, fresh_study
) -> None:
    """The auto-routing example of the README, run by a real Orthanc: upload, and wait."""
    gateway = gateway_factory()
    routing = start_orthanc(
        tmp_path / "routing-pacs",
        modalities={"pulmoseg": [GATEWAY_AET, "127.0.0.1", gateway.port]},
        lua_scripts=[ROOT / "docs" / "examples" / "orthanc-route-ct-to-pulmoseg.lua"],
    )
    try:
        gateway.start(destinations=[routing.destination])
        study_uid, ct_files = fresh_study()
        extras = add_non_ct_instances(ct_files[0], tmp_path / "extras")
        routing.upload(ct_files + extras)
        delivered_seg(routing, study_uid, ct_files)
        # The SEG's arrival re-stabilises the study; the rule must not route it again.
        time.sleep(3)
        assert gateway.metric("pulmoseg_pacs_instances_received_total") == len(ct_files) + 1
    finally:
        routing.stop()
