"""Fault tests of the gateway with real peers: a destination that is down, a SIGKILL in the
middle of a study, a full spool. What a sender was told is stored must always come out as a
SEG (or sit in the dead-letter folder with its reason), never vanish."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pacs_peers import (
    delivered_seg,
    free_port,
    spool_is_empty,
    start_orthanc,
    storescu,
    wait_until,
)

from service.core.identifiers import uid_hash
from tests.dicom_validation import dciodvfy_errors


def incoming_files(gateway) -> list[Path]:
    return sorted((gateway.spool_dir / "incoming").rglob("*.dcm"))


def test_a_destination_that_is_down_gets_the_seg_once_it_is_up(
    tmp_path: Path, gateway_factory, fresh_study
) -> None:
    port = free_port()
    destination = f"LATEPACS@127.0.0.1:{port}"
    gateway = gateway_factory(destinations=[destination], max_attempts=30).start()
    study_uid, ct_files = fresh_study()

    assert storescu(gateway.port, ct_files).returncode == 0
    wait_until(
        lambda: (
            gateway.metric("pulmoseg_pacs_sends_total", destination=destination, result="retry")
            >= 2
        ),
        60,
        "two failed deliveries to the stopped destination",
    )
    assert list((gateway.spool_dir / "work").glob("*/seg.dcm")), "the SEG waits in the spool"

    late = start_orthanc(tmp_path / "late-pacs", dicom_port=port, aet="LATEPACS")
    try:
        delivered_seg(late, study_uid, ct_files)
    finally:
        late.stop()
    wait_until(lambda: spool_is_empty(gateway), 10, "an empty spool")
    gateway.wait_for_metric(
        "pulmoseg_pacs_sends_total", 1, destination=destination, result="success"
    )
    assert not gateway.dead_letter_dir.exists() or not any(gateway.dead_letter_dir.iterdir())


def test_after_the_last_retry_the_seg_goes_to_the_dead_letter_folder(
    gateway_factory, fresh_study
) -> None:
    destination = f"NOBODY@127.0.0.1:{free_port()}"
    gateway = gateway_factory(
        destinations=[destination],
        max_attempts=2,
        retry_initial_delay_s=0.2,
        retry_max_delay_s=0.2,
    ).start()
    _, ct_files = fresh_study()

    assert storescu(gateway.port, ct_files).returncode == 0
    (reason,) = wait_until(
        lambda: list(gateway.dead_letter_dir.glob("*/reason.txt")), 60, "a dead-letter entry"
    )
    assert f"delivery to {destination} failed after 2 attempt(s)" in reason.read_text()
    seg = reason.parent / "seg.dcm"
    assert pydicom.dcmread(seg).Modality == "SEG"
    assert dciodvfy_errors(seg) == []
    assert spool_is_empty(gateway)
    gateway.wait_for_metric("pulmoseg_pacs_studies_completed_total", 1, outcome="dead_letter")
    assert (
        gateway.metric("pulmoseg_pacs_sends_total", destination=destination, result="failed") == 1
    )


def test_a_listener_killed_mid_study_loses_nothing(orthanc, gateway_factory, fresh_study) -> None:
    gateway = gateway_factory(study_timeout_s=4.0).start()
    study_uid, ct_files = fresh_study()
    first, second = ct_files[:12], ct_files[12:]

    assert storescu(gateway.port, first).returncode == 0
    gateway.kill()
    assert len(incoming_files(gateway)) == len(first), "acknowledged means on disk"

    gateway.start()  # same spool, same port: the sender carries on with the rest
    assert storescu(gateway.port, second).returncode == 0
    delivered_seg(orthanc, study_uid, ct_files)
    wait_until(lambda: spool_is_empty(gateway), 10, "an empty spool")
    gateway.wait_for_metric("pulmoseg_pacs_studies_completed_total", 1, outcome="delivered")


def test_a_full_spool_refuses_with_out_of_resources_and_keeps_what_it_accepted(
    orthanc, gateway_factory, fresh_study
) -> None:
    study_uid, ct_files = fresh_study()
    limit = int(ct_files[0].stat().st_size * 5.5)
    gateway = gateway_factory(spool_max_bytes=limit, study_timeout_s=600.0).start()

    sent = storescu(gateway.port, ct_files, options=("-v",))
    output = sent.stdout + sent.stderr
    assert "Refused: OutOfResources" in output, output[-2000:]
    kept = incoming_files(gateway)
    assert 4 <= len(kept) <= 6
    assert gateway.metric("pulmoseg_pacs_instances_received_total") == len(kept)
    # storescu stops at the first refusal (a PACS would queue the rest for a later retry).
    refusals = gateway.metric("pulmoseg_pacs_instances_refused_total", reason="spool_full")
    assert 1 <= refusals <= len(ct_files) - len(kept)
    assert gateway.metric("pulmoseg_pacs_spool_bytes") <= limit

    # An operator makes room and restarts; the PACS re-sends only what was refused.
    gateway.stop()
    gateway.start(spool_max_bytes=100 * limit, study_timeout_s=2.0)
    assert incoming_files(gateway) == kept
    kept_names = {p.name for p in kept}
    refused = [
        f
        for f in ct_files
        if f"{uid_hash(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID))}.dcm"
        not in kept_names
    ]
    assert storescu(gateway.port, refused).returncode == 0
    delivered_seg(orthanc, study_uid, ct_files)
