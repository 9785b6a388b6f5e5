"""The EAP-IG / MIB benchmark runs tiny: both methods timed, each ranking's CPR and CMD in range."""

import math

from benchmarks.circuit_mib import measure

from headscope.models.loading import load_model
from tests.conftest import save_tiny_gpt2


def test_circuit_mib_benchmark_tiny(tmp_path, vocabulary, capsys):
    model = load_model(str(save_tiny_gpt2(tmp_path / "tiny", vocabulary, n_layer=2, n_head=2, n_embd=16)))
    figures = measure(model, "seq-digits", n=3, curve=True)
    assert figures["eap_s"] > 0 and figures["ratio"] == figures["eap-ig_s"] / figures["eap_s"]
    for method in ("eap", "eap-ig"):
        assert figures[f"{method}_cmd"] >= 0 and math.isfinite(figures[f"{method}_cpr"])
    assert "eap-ig / eap time" in capsys.readouterr().out
