"""Model loading: bad directories fail in one clear line; the bridge matches Hugging Face's own model."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from headscope.models import checks, loading
from headscope.models.loading import ModelError, load_model, resolve


def _copy(tiny_dir: Path, tmp_path: Path, name: str = "model") -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / name))


def _edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | changes))


def _weights(directory: Path) -> Path:
    return directory / "model.safetensors"


def _no_weights(d: Path) -> None:
    _weights(d).unlink()


def _truncated(d: Path) -> None:
    data = _weights(d).read_bytes()
    _weights(d).write_bytes(data[: len(data) // 2])


def _garbled_header(d: Path) -> None:
    _weights(d).write_bytes(b"\x00not a safetensors file" * 40)


def _header_not_json(d: Path) -> None:
    data = _weights(d).read_bytes()
    length = int.from_bytes(data[:8], "little")
    _weights(d).write_bytes(data[:8] + b"#" * length + data[8 + length :])


def _more_layers(d: Path) -> None:
    _edit_config(d, n_layer=3)


def _fewer_layers(d: Path) -> None:
    _edit_config(d, n_layer=1)


def _wider(d: Path) -> None:
    _edit_config(d, n_embd=64)


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _config_not_json(d: Path) -> None:
    (d / "config.json").write_text("{ this is not json")


def _no_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (d / name).unlink(missing_ok=True)


def _larger_tokenizer(d: Path) -> None:
    """The tiny model's 203 words plus 6 more: 210 tokens for 204 embedding rows."""
    from headscope.models.organism.tokenizer import word_level_tokenizer

    words = list(json.loads((d / "tokenizer.json").read_text())["model"]["vocab"])[1:]
    word_level_tokenizer([*words, *(f"extra{i}" for i in range(6))]).save_pretrained(d)


def _pickle_only(d: Path) -> None:
    _weights(d).unlink()
    (d / "pytorch_model.bin").write_bytes(b"pickle")


BAD_DIRECTORIES = {
    "no weights": (_no_weights, "has no weights (no *.safetensors file)"),
    "truncated safetensors": (_truncated, "is truncated: it has"),
    "garbled safetensors": (_garbled_header, "is not a valid safetensors file"),
    "header not json": (_header_not_json, "header is not JSON"),
    "config has more layers": (_more_layers, "the config needs transformer.h.2."),
    "config has fewer layers": (_fewer_layers, "the files hold transformer.h.1."),
    "config has wider layers": (_wider, "has shape [204, 32] in the files but [204, 64] by the config"),
    "no config": (_no_config, "has no config.json"),
    "config not json": (_config_not_json, "config.json cannot be used"),
    "pickle only": (_pickle_only, "holds only a pickle checkpoint (pytorch_model.bin)"),
    "no tokenizer": (_no_tokenizer, "has no tokenizer (no tokenizer.json or vocab files"),
    "tokenizer larger than the embedding": (
        _larger_tokenizer,
        "has 210 tokens but the embedding only 204 rows",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DIRECTORIES))
def test_bad_directory_fails_in_one_line(case, tiny_dir, tmp_path):
    directory = _copy(tiny_dir, tmp_path)
    damage, expected = BAD_DIRECTORIES[case]
    damage(directory)
    with pytest.raises(ModelError) as caught:
        load_model(str(directory))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_damage_is_detected_before_booting(tiny_dir, tmp_path, monkeypatch):
    """A config with an extra layer would load with random weights there: the check runs first."""
    directory = _copy(tiny_dir, tmp_path)
    _more_layers(directory)
    monkeypatch.setattr(loading, "_boot", lambda *a: pytest.fail("booted a mismatched model"))
    with pytest.raises(ModelError, match="does not match the weights"):
        load_model(str(directory))


def test_shapes_are_read_from_the_header(tiny_dir):
    shapes = checks.safetensors_shapes(_weights(tiny_dir))
    assert shapes["transformer.wte.weight"] == (204, 32)
    assert shapes["transformer.h.1.attn.c_attn.weight"] == (32, 96)


def test_pickle_checkpoint_loads_only_when_allowed(tiny_dir, tmp_path):
    directory = _copy(tiny_dir, tmp_path)
    state = GPT2LMHeadModel.from_pretrained(directory).state_dict()
    torch.save(state, directory / "pytorch_model.bin")
    _weights(directory).unlink()
    with pytest.raises(ModelError, match="--allow-pickle"):
        load_model(str(directory))
    model = load_model(str(directory), allow_pickle=True)
    assert torch.equal(model.weights.W_U, state["lm_head.weight"].T)


def test_hub_name_without_network_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "_hub_cached", lambda name: False)
    with pytest.raises(ModelError) as caught:
        load_model("some-org/some-model")
    assert "model hub is not reachable" in str(caught.value)
    assert str(caught.value).startswith("model='some-org/some-model': ")  # the Python argument
    assert "--" not in str(caught.value)


def test_hub_probe_never_hangs(monkeypatch):
    """A name lookup or connection that hangs: the probe gives up after its own timeout."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def hang(*args, **kwargs):  # then fail as a timed-out connection does (the thread outlives the test)
        time.sleep(30)
        raise OSError("timed out")

    monkeypatch.setattr(loading.socket, "create_connection", hang)
    started = time.monotonic()
    assert loading.hub_reachable(timeout=0.5) is False
    assert time.monotonic() - started < 2.0


def test_failed_download_is_one_line(monkeypatch):
    """The hub answers but the download fails: still one ModelError, no traceback."""
    monkeypatch.setattr(loading, "_hub_cached", lambda name: False)
    monkeypatch.setattr(loading, "hub_reachable", lambda: True)

    def refuse(name, device):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore")

    monkeypatch.setattr(loading, "_boot", refuse)
    with pytest.raises(ModelError) as caught:
        load_model("some-org/some-model")
    assert "model='some-org/some-model': cannot download it" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_path_is_not_taken_for_a_hub_name(tmp_path):
    with pytest.raises(ModelError, match="no such directory"):
        resolve(str(tmp_path / "absent"))


def test_a_file_is_refused_naming_its_folder(tiny_dir):
    with pytest.raises(ModelError) as caught:
        resolve(str(tiny_dir / "config.json"))
    assert f"is a file; give the folder that holds it, {tiny_dir}" in str(caught.value)


def test_a_symlink_loop_is_not_taken_for_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("loop").symlink_to("loop")  # a relative name, as a hub name would be spelt
    monkeypatch.setattr(loading, "_boot_hub", lambda *a: pytest.fail("asked the hub"))
    with pytest.raises(ModelError, match="model='loop' is a symlink loop"):
        load_model("loop")


def test_a_broken_symlink_names_its_target(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="is a broken symlink to .*nowhere"):
        resolve(str(tmp_path / "gone"))


def test_organism_resolves_to_the_bundled_directory(tmp_path, monkeypatch):
    bundled = tmp_path / "weights"
    bundled.mkdir()
    monkeypatch.setattr(loading, "ORGANISM_DIR", bundled)
    with pytest.raises(ModelError, match="organism is missing"):
        resolve("organism")
    (bundled / "config.json").write_text("{}")
    assert resolve("organism") == ("organism", bundled)


def test_installed_organism_is_inside_the_package():
    if not (loading.ORGANISM_DIR / "config.json").is_file():
        pytest.skip("the organism's weights are not bundled in this checkout yet")
    source, directory = resolve("organism")
    assert source == "organism"
    assert directory == Path(loading.__file__).parent / "organism" / "weights"
    assert checks.weight_files(directory)


def test_identity_and_context_come_from_the_config(tiny_model, tiny_dir):
    identity = tiny_model.identity
    assert (identity.n_layers, identity.n_heads, identity.d_model, identity.n_ctx) == (2, 4, 32, 64)
    assert tiny_model.tokens.n_ctx == 64
    assert identity.weights_sha256 == hashlib.sha256(_weights(tiny_dir).read_bytes()).hexdigest()


def test_bridge_reproduces_hugging_face_logits_and_attention(tiny_model, tiny_dir):
    """An independent implementation: HF's own eager forward pass on the same weights."""
    reference = GPT2LMHeadModel.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    tokens = torch.tensor([[0, 5, 17, 42, 99, 3, 150, 7], [0, 8, 8, 8, 1, 2, 3, 200]])
    with torch.no_grad():
        expected = reference(tokens, output_attentions=True)
        patterns = {}
        hooks = [
            (f"blocks.{layer}.attn.hook_pattern", _keep(patterns, layer))
            for layer in range(tiny_model.n_layers)
        ]
        logits = tiny_model.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
    torch.testing.assert_close(logits, expected.logits, atol=1e-4, rtol=1e-4)
    for layer in range(tiny_model.n_layers):
        torch.testing.assert_close(patterns[layer], expected.attentions[layer], atol=1e-5, rtol=1e-4)
    assert patterns[0].shape == (2, 4, 8, 8)


def _keep(store: dict, layer: int):
    def hook(pattern, hook):
        store[layer] = pattern.detach().clone()

    return hook


def test_no_pickle_is_read_when_safetensors_exist(tiny_dir, tmp_path, monkeypatch):
    """With both formats present, only the safetensors file is used."""
    directory = _copy(tiny_dir, tmp_path)
    (directory / "pytorch_model.bin").write_bytes(b"not even a pickle")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    model = load_model(str(directory))
    assert model.identity.n_layers == 2
