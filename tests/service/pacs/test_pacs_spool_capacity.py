"""The gateway publishes its spool limit, which the PulmosegPacsSpoolFilling alert and the
dashboard divide the spool's bytes by (a real gateway, its real /metrics)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from service.pacs.gateway import start_gateway
from service.pacs.settings import load_pacs_settings


def test_the_spool_limit_is_on_metrics(tmp_path) -> None:
    settings = load_pacs_settings(
        env={},
        port=0,
        destinations=["ORTHANC@127.0.0.1:4242"],
        allowed_calling_aets=["CT"],
        spool_dir=tmp_path / "spool",
        spool_max_bytes=3 * 2**30,
        metrics_enabled=True,
        metrics_port=0,
    )
    gateway = start_gateway(settings)
    try:
        url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        gateway.stop()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["pulmoseg_pacs_spool_capacity_bytes"] == 3 * 2**30
    assert samples["pulmoseg_pacs_spool_bytes"] == 0
