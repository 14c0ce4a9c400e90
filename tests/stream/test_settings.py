"""Settings: env vars, CLI overrides, and transport security reaching every client config."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream.kafka import aiokafka_config, kafka_python_config, partition_for
from stream.settings import Settings, load_settings


def test_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_MAX_BATCH", "77")
    monkeypatch.setenv("LEPTON_TOPIC_EDGES", "my.edges")
    s = load_settings(max_batch=None, top_k=3)
    assert (s.max_batch, s.topic_edges, s.top_k) == (77, "my.edges", 3)
    assert load_settings(max_batch=5).max_batch == 5
    assert s.topics()["my.edges"] == s.edges_partitions


def test_invalid_values_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(max_batch=0)
    with pytest.raises(ValidationError):
        Settings(nonsense=1)  # type: ignore[call-arg]


def test_secrets_are_not_printed() -> None:
    s = Settings(keys="k:" + "A" * 43 + "=", sasl_password="hunter2")
    assert "hunter2" not in repr(s) and "AAAA" not in repr(s)


def test_sasl_scram_over_tls_reaches_both_clients(tmp_path: Path) -> None:
    ca = _self_signed_ca(tmp_path)
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
                 sasl_password="pw", ssl_cafile=ca)
    cfg = kafka_python_config(s, "broker:9093")
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_username"] == "svc" and cfg["sasl_plain_password"] == "pw"
    assert cfg["ssl_cafile"] == str(ca)
    aio = aiokafka_config(s, "broker:9093")
    assert aio["sasl_plain_username"] == "svc" and aio["sasl_plain_password"] == "pw"
    assert aio["sasl_mechanism"] == "SCRAM-SHA-512" and aio["security_protocol"] == "SASL_SSL"
    assert isinstance(aio["ssl_context"], ssl.SSLContext)


def test_plaintext_has_no_credentials() -> None:
    s = Settings()
    assert aiokafka_config(s, "h:1") == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}
    assert kafka_python_config(s, "h:1") == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}


def _self_signed_ca(tmp: Path) -> Path:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lepton-test-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    path = tmp / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_model_checkpoint_reaches_the_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_MODEL", "/models/uci.pt")
    monkeypatch.setenv("LEPTON_REFIT_EVERY", "123")
    cfg = load_settings().processor_config()
    assert (cfg.model_path, cfg.refit_every) == ("/models/uci.pt", 123)


def test_partition_for_matches_kafkas_default_partitioner() -> None:
    # aiokafka's partitioner is an independent implementation of the Java client's murmur2 rule
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"a|b", b"n42", b"", "ünï|côde".encode()):
        assert partition_for(key, 7) == DefaultPartitioner()(key, list(range(7)), list(range(7)))


def test_anomaly_weights_reach_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_ANOMALY_WEIGHTS", "dormancy=1,midas=0.25")
    monkeypatch.setenv("LEPTON_ACTIVITY_WINDOW", "50")
    cfg = load_settings().processor_config()
    assert cfg.anomaly_weights == {"dormancy": 1.0, "surprise": 0.0, "midas": 0.25, "burst": 0.0}
    assert cfg.activity_window == 50.0
    with pytest.raises(ValidationError, match="NAME=VALUE"):
        Settings(anomaly_weights="novelty=1")


def test_kernel_threads_leave_the_event_loop_a_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert Settings().resolved_threads() == 1  # 2 cores: one for the kernels, one for the loop
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert Settings().resolved_threads() == 15
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0}, raising=False)
    assert Settings().resolved_threads() == 1
    monkeypatch.setenv("LEPTON_THREADS", "3")
    assert load_settings().resolved_threads() == 3


def test_the_core_defaults_to_the_services_settings() -> None:
    """``ProcessorConfig`` (the core used in process: benches, evaluations) and ``Settings`` (the
    service) give every setting they share the same default — one changed alone would make the
    evaluations measure another configuration than the one served. Device aside: the core
    takes a concrete one, the service resolves ``auto``."""
    import dataclasses

    from gnn.processor import ProcessorConfig

    core = {f.name: f.default for f in dataclasses.fields(ProcessorConfig)}
    shared = (set(core) & set(Settings.model_fields)) - {"device"}
    assert {"hubs", "ann_nprobe", "candidates", "top_k"} <= shared
    assert {n: core[n] for n in shared} == {n: Settings.model_fields[n].default for n in shared}
