"""Checkpoint manifest, pull and verify against a local HTTP server on 127.0.0.1 (Range requests, cut connections,
an HF-style endpoint), offline mode, null-sha policy, manifest validation, the registry glue and the workflow rule."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import local_http_server, run_snakemake, shared_registry_cache, workflow_pythonpath

from dpmbench.errors import DpmbenchError
from dpmbench.models import manifest as ck
from dpmbench.models import store

ROOT = Path(__file__).parents[1]
BIG = bytes(range(256)) * 1200  # 300 KiB: several chunks of the handler's writes
SMALL = b'{"_class_name": "UNet2DModel", "sample_size": 8}\n'
SHA_BIG = hashlib.sha256(BIG).hexdigest()
SHA_SMALL = hashlib.sha256(SMALL).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with 'Range: bytes=N-' support. ``cut[path] = (n, times)`` sends only the
    first n bytes of the body (then closes the connection) to the next ``times`` requests of ``path``."""

    files: dict[str, bytes] = {}
    cut: dict[str, tuple[int, int]] = {}
    ignore_range = False
    requests: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        cls = type(self)
        cls.requests.append((self.path, self.headers.get("Range")))
        body = cls.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        start = int(m.group(1)) if m and not cls.ignore_range else 0
        if start >= len(body) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        n, times = cls.cut.get(self.path, (0, 0))
        if times > 0:
            cls.cut[self.path] = (n, times - 1)
            self.wfile.write(body[start:start + n])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    _Handler.files, _Handler.cut, _Handler.requests, _Handler.ignore_range = {}, {}, [], False
    with local_http_server(_Handler) as url:
        yield url


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DPMBENCH_OFFLINE", raising=False)
    monkeypatch.delenv("DPMBENCH_HF_ENDPOINT", raising=False)
    store._WARNED.clear()
    return tmp_path / "cache"


def entry(source: dict[str, Any], files: list[dict[str, Any]], cid: str = "toy", **kw: Any) -> ck.CheckpointEntry:
    raw = {"adapter": "edm-pickle", "source": source, "files": files, "license": "test-only", "schedule": "edm",
           "parameterization": "x0", "resolution": 8, **kw}
    return ck.parse_entry(cid, raw, "test manifest")


def url_entry(server: str, sha: str | None = SHA_BIG, name: str = "net.safetensors", **kw: Any) -> ck.CheckpointEntry:
    _Handler.files[f"/files/{name}"] = BIG
    return entry({"url": f"{server}/files/{name}"}, [{"path": name, "sha256": sha, "size": kw.pop("size", None)}],
                 **kw)


def leftovers(d: Path) -> list[str]:
    """Checkpoint files (final or partial) in a checkpoint directory, ignoring the lock/state files."""
    return sorted(p.name for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))


# (a) ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_pull_downloads_and_verifies(server: str, cache: Path) -> None:
    e = url_entry(server, size=len(BIG))
    root = store.pull(e, progress=False)
    assert root == cache / "checkpoints" / "toy" == store.checkpoint_dir(e)
    assert (root / "net.safetensors").read_bytes() == BIG and leftovers(root) == ["net.safetensors"]
    assert _Handler.requests == [("/files/net.safetensors", None)]
    assert store.pull(e, progress=False) == root and len(_Handler.requests) == 1  # verified copy: no new request
    assert store.stamp_text(e) == f"{SHA_BIG}  net.safetensors\n"


@pytest.mark.timeout(60)
def test_progress_bar_on_big_files(server: str, cache: Path, monkeypatch, capsys) -> None:
    import dpmbench.download as dl

    e = url_entry(server)
    monkeypatch.setattr(dl, "PROGRESS_MIN_BYTES", len(BIG))  # BIG counts as big here
    store.pull(e, progress=True)
    assert "net.safetensors" in capsys.readouterr().err  # tqdm's bar, named after the file
    small = entry({"url": f"{server}/files/net.safetensors"}, [{"path": "n.safetensors", "sha256": SHA_BIG}], "two")
    monkeypatch.setattr(dl, "PROGRESS_MIN_BYTES", len(BIG) + 1)
    store.pull(small, progress=True)
    assert capsys.readouterr().err == ""


def test_hf_url_quotes_the_revision(monkeypatch) -> None:
    monkeypatch.setenv("DPMBENCH_HF_ENDPOINT", "http://mirror.local/hf/")
    e = entry({"hf": "org/repo", "revision": "refs/pr/1"}, [{"path": "unet/a b.json", "sha256": SHA_SMALL}])
    assert e.url(e.files[0]) == "http://mirror.local/hf/org/repo/resolve/refs%2Fpr%2F1/unet/a%20b.json"
    monkeypatch.delenv("DPMBENCH_HF_ENDPOINT")
    assert e.url(e.files[0]).startswith("https://huggingface.co/org/repo/resolve/")


# (b) ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_cut_connection_is_resumed_with_a_range_request(server: str, cache: Path) -> None:
    e = url_entry(server)
    _Handler.cut["/files/net.safetensors"] = (100_000, 1)  # the first response stops after 100,000 bytes
    root = store.pull(e, progress=False)
    assert (root / "net.safetensors").read_bytes() == BIG
    assert _Handler.requests == [("/files/net.safetensors", None), ("/files/net.safetensors", "bytes=100000-")]


@pytest.mark.timeout(60)
def test_partial_file_is_kept_and_resumed_by_the_next_pull(server: str, cache: Path) -> None:
    e = url_entry(server)
    _Handler.cut["/files/net.safetensors"] = (50_000, 10)  # every response is cut: the retries run out
    with pytest.raises(DpmbenchError, match=r"was cut 4 times .* partial data kept .*net.safetensors.part "
                                            r"\(200000 bytes\): run again to resume") as err:
        store.pull(e, progress=False)
    assert "\n" not in str(err.value)
    part = store.checkpoint_dir(e) / "net.safetensors.part"
    assert part.stat().st_size == 200_000 and not (store.checkpoint_dir(e) / "net.safetensors").exists()
    _Handler.cut.clear()
    _Handler.requests.clear()
    assert (store.pull(e, progress=False) / "net.safetensors").read_bytes() == BIG
    assert _Handler.requests == [("/files/net.safetensors", "bytes=200000-")] and not part.exists()


@pytest.mark.timeout(60)
def test_a_server_ignoring_range_restarts_the_file(server: str, cache: Path) -> None:
    e = url_entry(server)
    part = store.checkpoint_dir(e) / "net.safetensors.part"
    part.write_bytes(b"stale bytes from elsewhere")
    _Handler.ignore_range = True  # answers 200 with the whole file: the partial data must not be kept
    assert (store.pull(e, progress=False) / "net.safetensors").read_bytes() == BIG and not part.exists()
    assert _Handler.requests == [("/files/net.safetensors", "bytes=26-")]


# (c) ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_checksum_mismatch_leaves_nothing(server: str, cache: Path) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    e = url_entry(server, sha=wrong)
    with pytest.raises(DpmbenchError, match=rf"checksum mismatch for download of checkpoint 'toy' file "
                                            rf"'net.safetensors' .*sha256 {SHA_BIG} but expected {wrong}") as err:
        store.pull(e, progress=False)
    assert "\n" not in str(err.value)
    assert leftovers(store.checkpoint_dir(e)) == []  # neither the final file nor a .part


@pytest.mark.timeout(60)
def test_a_corrupted_cached_file_is_detected_and_fetched_again(server: str, cache: Path) -> None:
    e = url_entry(server)
    root = store.pull(e, progress=False)
    (root / "net.safetensors").write_bytes(BIG[:-1] + b"X")  # same size, new mtime: re-hashed
    with pytest.raises(DpmbenchError, match=r"checksum mismatch for checkpoint 'toy' file .* \(from the manifest\)"):
        store.verify(e)
    with pytest.raises(DpmbenchError, match="checksum mismatch"):
        store.pull(e, offline=True)  # offline: reported, not replaced
    assert store.pull(e, progress=False) == root and (root / "net.safetensors").read_bytes() == BIG


# (d) ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_offline_never_connects_and_names_every_file_and_place(server: str, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("DPMBENCH_HF_ENDPOINT", server)
    e = entry({"hf": "org/repo", "revision": "v1"},
              [{"path": "unet/config.json", "sha256": SHA_SMALL},
               {"path": "unet/diffusion_pytorch_model.safetensors", "sha256": SHA_BIG}])
    root = store.checkpoint_dir(e)
    monkeypatch.setenv("DPMBENCH_OFFLINE", "1")
    with pytest.raises(DpmbenchError) as err:
        store.pull(e)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("offline (DPMBENCH_OFFLINE=1, --offline or config offline: true) and "
                                              "checkpoint 'toy' is missing 2 file(s): ")
    assert (f"download {server}/org/repo/resolve/v1/unet/config.json and place it at {root}/unet/config.json "
            f"(sha256 {SHA_SMALL})") in msg
    assert f"place it at {root}/unet/diffusion_pytorch_model.safetensors (sha256 {SHA_BIG})" in msg
    monkeypatch.delenv("DPMBENCH_OFFLINE")
    with pytest.raises(DpmbenchError, match="offline .* missing 2 file"):
        store.pull(e, offline=True)  # the argument, as `--offline` / `--config offline=true`
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "config.json").write_bytes(SMALL)  # placed by hand: only the other file is missing
    with pytest.raises(DpmbenchError, match=r"missing 1 file\(s\): download .*diffusion_pytorch_model.safetensors"):
        store.pull(e, offline=True)
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(BIG)
    assert store.pull(e, offline=True) == root
    assert _Handler.requests == []  # no connection was ever opened


@pytest.mark.timeout(60)
def test_manual_source_says_what_to_place_where(server: str, cache: Path) -> None:
    e = entry({"manual": "Google Drive folder X of the authors"}, [{"path": "model.safetensors", "sha256": SHA_BIG}])
    root = store.checkpoint_dir(e)
    with pytest.raises(DpmbenchError, match=rf"checkpoint 'toy' is a manual download \(Google Drive folder X of the "
                                            rf"authors\) and 1 file\(s\) are missing: place model.safetensors at "
                                            rf"{re.escape(str(root))}/model.safetensors \(sha256 {SHA_BIG}\)"):
        store.pull(e)
    (root / "model.safetensors").write_bytes(BIG)
    assert store.pull(e) == root


@pytest.mark.timeout(60)
def test_cli_pull_offline_and_online(server: str, cache: Path, tmp_path: Path, capsys) -> None:
    from support import run_cli

    _Handler.files["/files/net.safetensors"] = BIG
    manifest = tmp_path / "run.yaml"  # a run config's checkpoints section
    manifest.write_text(yaml.safe_dump({"models": {}, "checkpoints": {"toy": {
        "adapter": "edm-pickle", "source": {"url": f"{server}/files/net.safetensors"},
        "files": [{"path": "net.safetensors", "sha256": SHA_BIG}], "license": "test-only", "schedule": "edm",
        "parameterization": "x0", "resolution": 8}}}))
    code, out, err = run_cli(capsys, "pull", "toy", "--manifest", str(manifest), "--offline")
    assert code == 2 and err.count("\n") == 1 and "place it at" in err and _Handler.requests == []
    code, out, err = run_cli(capsys, "pull", "toy", "--manifest", str(manifest), "--no-progress")
    assert code == 0 and out.startswith("toy: 1 file(s) verified in ") and len(_Handler.requests) == 1
    code, out, err = run_cli(capsys, "pull", "nope", "--manifest", str(manifest))
    assert code == 2 and err.startswith("dpmbench: error: invalid checkpoint id 'nope'; allowed: ddpm-cifar10, ")
    code, out, err = run_cli(capsys, "list", "models")
    names = [line.split(":")[0] for line in out.splitlines()]
    base = ["gmm-2d", "gmm-digits", "digits-empirical"]
    oracles = [*base, *(b + "-ddpm" for b in base), *(b + "-flow" for b in base)]
    assert code == 0 and names[:9] == oracles and names[9:] == list(ck.load_manifest())
    assert "sd15: checkpoint (stable-diffusion), 512px, text-conditioned, vp-discrete/eps, license " in out


# (e) ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_hf_source_through_the_endpoint_and_unpinned_lock(server: str, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("DPMBENCH_HF_ENDPOINT", server + "/")
    _Handler.files["/org/repo/resolve/abc123/unet/config.json"] = SMALL
    _Handler.files["/org/repo/resolve/abc123/unet/diffusion_pytorch_model.safetensors"] = BIG
    e = entry({"hf": "org/repo", "revision": "abc123"},
              [{"path": "unet/config.json", "sha256": None},
               {"path": "unet/diffusion_pytorch_model.safetensors", "sha256": SHA_BIG, "size": len(BIG)},
               {"path": "tokenizer/vocab.txt", "sha256": None}])
    _Handler.files["/org/repo/resolve/abc123/tokenizer/vocab.txt"] = b"a\nb\n"
    with pytest.raises(DpmbenchError, match=r"refusing checkpoint 'toy' file 'unet/config.json': no sha256 pinned; "
                                            r"pin its sha256 .* or opt in for this run with --trust-unpinned"):
        store.pull(e, progress=False)  # without the per-run opt-in: nothing is downloaded
    assert _Handler.requests == []
    unpinned = (r"checkpoint 'toy': 2 file\(s\) have no sha256 in the manifest "
                r"\('unet/config.json', 'tokenizer/vocab.txt'\) and are used because of --trust-unpinned; the sha256")
    with pytest.warns(store.UnpinnedChecksumWarning, match=unpinned) as rec:
        root = store.pull(e, progress=False, trust_unpinned=True)
    assert len(rec) == 1  # one warning for the checkpoint
    assert sorted(p for p, _ in _Handler.requests) == ["/org/repo/resolve/abc123/tokenizer/vocab.txt",
                                                       "/org/repo/resolve/abc123/unet/config.json",
                                                       "/org/repo/resolve/abc123/unet/diffusion_pytorch_model.safetensors"]
    assert (root / "unet" / "config.json").read_bytes() == SMALL
    lock = json.loads((root / store.LOCK_FILE).read_text())
    assert lock["source"] == e.source and lock["files"] == {
        "unet/config.json": SHA_SMALL, "tokenizer/vocab.txt": hashlib.sha256(b"a\nb\n").hexdigest()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recorded hash is used: no second warning, no new request
        assert store.pull(e, progress=False, trust_unpinned=True) == root
        assert store.verify(e, trust_unpinned=True) == root
    assert len(_Handler.requests) == 3
    with pytest.raises(DpmbenchError, match="opt in for this run with --trust-unpinned"):
        store.verify(e)  # the opt-in is per run: a later run without it is refused again
    (root / "unet" / "config.json").write_bytes(SMALL.replace(b"8", b"9"))
    with pytest.raises(DpmbenchError, match=r"checksum mismatch .*config.json.* \(from the lock file\)"):
        store.verify(e, trust_unpinned=True)


def test_verification_is_cached_by_size_and_mtime(cache: Path, monkeypatch) -> None:
    import dpmbench.download as dl

    e = entry({"manual": "by hand"}, [{"path": "a.safetensors", "sha256": SHA_BIG}])
    (store.checkpoint_dir(e) / "a.safetensors").write_bytes(BIG)
    calls = []
    real = dl.sha256_file
    monkeypatch.setattr(dl, "sha256_file", lambda p: calls.append(p) or real(p))
    store.verify(e)
    store.verify(e)
    assert len(calls) == 1  # the second verification read the cache
    p = store.checkpoint_dir(e) / "a.safetensors"
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    store.verify(e)
    assert len(calls) == 2  # a touched file is hashed again


# (f) ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("source", "path", "why"), [
    ("url", "edm.pkl", "it is a pickle"),
    ("hf", "unet/diffusion_pytorch_model.bin", "it is a pickle"),
    ("manual", "checkpoint_8.pth", "it is a pickle"),
    ("url", "net.safetensors", "no sha256 pinned"),
])
def test_unpinned_pickles_and_non_hf_files_are_refused(server: str, cache: Path, monkeypatch, source: str,
                                                       path: str, why: str) -> None:
    monkeypatch.setenv("DPMBENCH_HF_ENDPOINT", server)
    src = {"url": {"url": f"{server}/files/{path}"}, "hf": {"hf": "org/repo", "revision": "main"},
           "manual": {"manual": "somewhere"}}[source]
    _Handler.files[f"/files/{path}"] = _Handler.files[f"/org/repo/resolve/main/{path}"] = BIG
    e = entry(src, [{"path": path, "sha256": None}])
    for fn in (store.pull, store.verify):
        with pytest.raises(DpmbenchError, match=rf"refusing checkpoint 'toy' file '{path}': {why}.* pin its sha256 "
                                                rf"in the manifest \(test manifest\) at checkpoints.toy.files\[0\]"
                                                rf".sha256, or opt in for this run with --trust-unpinned") as err:
            fn(e)
        assert "\n" not in str(err.value)
    assert _Handler.requests == [] and leftovers(store.checkpoint_dir(e)) == []


# (g) ---------------------------------------------------------------------------------------------------------
GOOD = {"adapter": "diffusers-unet", "source": {"hf": "org/repo", "revision": "main"},
        "files": [{"path": "config.json", "sha256": None}], "license": "apache-2.0", "schedule": "vp-discrete",
        "parameterization": "eps", "resolution": 32}


@pytest.mark.parametrize(("change", "message"), [
    ({"adapter": "diffusers"}, "invalid checkpoints.x.adapter 'diffusers'; allowed: diffusers-unet, "
                               "latent-diffusion, stable-diffusion, sd3, flux, edm-pickle, score-sde"),
    ({"schedule": "linear"}, "invalid checkpoints.x.schedule 'linear'; allowed: vp-linear, vp-cosine, vp-discrete"),
    ({"parameterization": "score"}, "invalid checkpoints.x.parameterization 'score'; allowed: eps, x0, v, flow"),
    ({"source": {"hf": "org/repo"}}, "invalid checkpoints.x.source.revision None; allowed: a commit sha"),
    ({"source": {"hf": "org/repo", "revision": "main", "url": "https://a"}}, "invalid checkpoints.x.source "),
    ({"source": {"url": "ftp://a/b"}}, "invalid checkpoints.x.source.url 'ftp://a/b'; allowed: an http(s) URL"),
    ({"files": [{"path": "a.json", "sha256": "abc"}]}, "invalid checkpoints.x.files[0].sha256 'abc'; allowed: 64"),
    ({"files": [{"path": "../a.json"}]}, "invalid checkpoints.x.files[0].path '../a.json'; allowed: a relative"),
    ({"files": [{"path": "a.json", "size": -1}]}, "invalid checkpoints.x.files[0].size -1; allowed: an integer"),
    ({"files": []}, "invalid checkpoints.x.files []; allowed: a non-empty list"),
    ({"resolution": 0}, "invalid checkpoints.x.resolution 0; allowed: an integer >= 1"),
    ({"licence": "mit"}, "invalid checkpoints.x.licence 'mit'; allowed: keys adapter, source, files, license"),
    ({"license": None}, "invalid checkpoints.x: missing required field 'license'"),
    ({"conditioning": "class"}, "invalid checkpoints.x.num_classes None: conditioning 'class' needs num_classes"),
])
def test_manifest_errors_are_one_line_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(DpmbenchError) as err:
        ck.parse_manifest({"x": {**GOOD, **change}}, "m.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith(message) and text.endswith("(in m.yaml)"), text


def test_manifest_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DpmbenchError, match="invalid manifest .*nope.yaml'?: no such file"):
        ck.load_manifest(tmp_path / "nope.yaml")
    (tmp_path / "m.yaml").write_text("ddpm: {}\n")
    with pytest.raises(DpmbenchError, match="no top-level 'checkpoints:' mapping"):
        ck.load_manifest(tmp_path / "m.yaml")
    with pytest.raises(DpmbenchError, match="invalid checkpoint id 'Bad Id'"):
        ck.parse_manifest({"Bad Id": GOOD})


def test_shipped_manifest() -> None:
    from dpmbench.models.base import PARAMETERIZATIONS
    from dpmbench.schedules import NOISE_SCHEDULES

    assert tuple(NOISE_SCHEDULES) == ck.SCHEDULES and ck.PARAMETERIZATIONS == PARAMETERIZATIONS
    m = ck.load_manifest()
    assert list(m) == ["ddpm-cifar10", "ddpm-bedroom", "ddpm-celebahq", "ldm-celebahq", "sd15", "sd21-base",
                       "edm-cifar10-uncond-vp", "edm-ffhq64-uncond-vp", "scoresde-cifar10-ddpmpp-deep-continuous",
                       "digits-unet", "digits-flow", "sd3-medium", "sd35-medium", "sd35-large", "flux-schnell",
                       "flux-dev", "adm-imagenet256-classifier-guided", "adm-imagenet128-classifier-guided"]
    adm = m["adm-imagenet256-classifier-guided"]  # one folder URL, two files (the openai/guided-diffusion README's)
    assert [adm.url(f) for f in adm.files] == [f"https://openaipublic.blob.core.windows.net/diffusion/jul-2021/{n}"
                                               for n in ("256x256_diffusion.pt", "256x256_classifier.pt")]
    assert m["ddpm-cifar10"].source == {"hf": "google/ddpm-cifar10-32", "revision": "main"}
    assert m["edm-cifar10-uncond-vp"].url(m["edm-cifar10-uncond-vp"].files[0]) == (
        "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl")
    assert m["scoresde-cifar10-ddpmpp-deep-continuous"].kind == "manual"
    for cid in ("digits-unet", "digits-flow"):
        assert m[cid].kind == "local" and all(f.sha256 for f in m[cid].files)
    assert {e.adapter for e in m.values()} == set(ck.ADAPTERS)
    for e in m.values():  # honest nulls: an unpinned pickle is never pulled
        for f in e.files:
            assert f.sha256 is None or re.fullmatch("[0-9a-f]{64}", f.sha256)
    as_dict = m["sd15"].as_dict()
    assert as_dict["conditioning"] == "text"
    assert as_dict["files"][3]["path"] == "unet/diffusion_pytorch_model.safetensors"


# registry glue -------------------------------------------------------------------------------------------------
def test_load_model_verifies_then_calls_the_adapter(cache: Path, tmp_path: Path, monkeypatch) -> None:
    import dpmbench
    from dpmbench.models import registry

    manifest = tmp_path / "checkpoints.yaml"
    manifest.write_text(yaml.safe_dump({"checkpoints": {"toy": {
        "adapter": "edm-pickle", "source": {"manual": "by hand"}, "files": [{"path": "w.safetensors",
                                                                            "sha256": SHA_BIG}],
        "license": "test-only", "schedule": "edm", "parameterization": "x0", "resolution": 8}}}))
    monkeypatch.setattr(ck, "DEFAULT_MANIFEST", manifest)
    assert dpmbench.list_models()[-1] == "toy"
    root = cache / "checkpoints" / "toy"
    with pytest.raises(DpmbenchError, match=rf"place w.safetensors at {re.escape(str(root))}/w.safetensors"):
        dpmbench.load_model("toy")
    (root / "w.safetensors").write_bytes(BIG)
    monkeypatch.setitem(sys.modules, "dpmbench.models.adapters", None)  # no adapters package: one clear line
    with pytest.raises(DpmbenchError, match="needs adapter 'edm-pickle', but the package dpmbench.models.adapters "
                                            "is not installed"):
        dpmbench.load_model("toy")
    seen = []
    monkeypatch.setattr(registry, "_load_adapter", lambda e, r, d: seen.append((e, r, d)) or "MODEL")
    assert dpmbench.load_model("toy", device="cpu") == "MODEL"
    (e, r, d), = seen
    assert e["id"] == "toy" and e["adapter"] == "edm-pickle" and e["files"][0]["sha256"] == SHA_BIG
    assert r == root and d == "cpu"
    with pytest.raises(DpmbenchError, match="invalid schedule for checkpoint model 'toy'"):
        dpmbench.load_model("toy", schedule="edm")
    (root / "w.safetensors").write_bytes(BIG[:-1] + b"!")
    with pytest.raises(DpmbenchError, match="checksum mismatch"):  # verified before every load
        dpmbench.load_model("toy")


# (h) ---------------------------------------------------------------------------------------------------------


def _snakemake(wd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_snakemake(["--snakefile", str(ROOT / "Snakefile"), "--directory", str(wd), "--configfile",
                          str(wd / "config.yaml"), "--cores", "1", *args], env, timeout=300)


@pytest.mark.timeout(300)
def test_pull_checkpoint_rule(server: str, tmp_path: Path) -> None:
    _Handler.files["/org/repo/resolve/rev1/unet/config.json"] = SMALL
    _Handler.files["/org/repo/resolve/rev1/vocab.txt"] = b"a\nb\n"
    ckpt = {"adapter": "diffusers-unet", "source": {"hf": "org/repo", "revision": "rev1"},
            "files": [{"path": "unet/config.json", "sha256": SHA_SMALL}, {"path": "vocab.txt", "sha256": None}],
            "license": "test-only", "schedule": "vp-discrete", "parameterization": "eps", "resolution": 8}
    config = {"metrics": ["fd_true"], "nfe": [3], "solvers": ["ddim"], "samples_per_shard": 2,
              "models": {"toy-ckpt": {"num_samples": 4}, "gmm-2d": {"num_samples": 4}},
              "checkpoints": {"toy-ckpt": ckpt}, "trust_unpinned": True}  # the run's opt-in: vocab.txt is unpinned
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "DPMBENCH_CACHE": shared_registry_cache(tmp_path / "cache"),
           "PYTHONPATH": workflow_pythonpath(ROOT),
           "DPMBENCH_HF_ENDPOINT": server}
    env.pop("DPMBENCH_OFFLINE", None)
    dag = _snakemake(tmp_path, env, "-n", "--dag")
    assert dag.returncode == 0, dag.stderr[-3000:]
    labels = dict(re.findall(r'(\d+)\[label = "([a-z_0-9]+)', dag.stdout))
    edges = re.findall(r"(\d+) -> (\d+)", dag.stdout)
    pulls = [n for n, lab in labels.items() if lab == "pull_checkpoint"]
    assert len(pulls) == 1  # one pull for the checkpoint model, none for the oracle model
    samples_fed = {b for a, b in edges if a == pulls[0]}
    assert samples_fed and all(labels[b] == "sample" for b in samples_fed)
    assert len(samples_fed) == 2  # both shards of toy-ckpt's one cell; gmm-2d's samples do not depend on it
    stamp = tmp_path / "results" / ".checkpoints" / "toy-ckpt.sha256"
    # offline: no connection, one line naming the file and the place
    off = _snakemake(tmp_path, env, str(stamp.relative_to(tmp_path)), "--config", "offline=true")
    where = tmp_path / "cache" / "checkpoints" / "toy-ckpt" / "unet" / "config.json"
    assert off.returncode != 0 and f"place it at {where} (sha256 {SHA_SMALL})" in off.stderr, off.stderr[-3000:]
    assert _Handler.requests == [] and not stamp.exists()
    # online: the rule pulls through the (local) HF endpoint and writes the stamp
    on = _snakemake(tmp_path, env, str(stamp.relative_to(tmp_path)))
    assert on.returncode == 0, on.stderr[-3000:]
    sha_vocab = hashlib.sha256(b"a\nb\n").hexdigest()  # the unpinned file: its hash recorded under the opt-in
    assert stamp.read_text() == f"{SHA_SMALL}  unet/config.json\n{sha_vocab}  vocab.txt\n"
    assert where.read_bytes() == SMALL
    assert sorted(_Handler.requests) == [("/org/repo/resolve/rev1/unet/config.json", None),
                                         ("/org/repo/resolve/rev1/vocab.txt", None)]


def test_config_checkpoints_section_is_validated(tmp_path: Path) -> None:
    from dpmbench.grid import build_grid

    base = {"metrics": ["fd_true"], "nfe": [3], "solvers": ["ddim"], "models": {"toy-ckpt": {"num_samples": 4}}}
    ckpt = {"adapter": "diffusers-unet", "source": {"hf": "org/repo", "revision": "rev1"},
            "files": [{"path": "unet/config.json", "sha256": None}], "license": "test-only",
            "schedule": "vp-discrete", "parameterization": "eps", "resolution": 8}
    grid = build_grid({**base, "checkpoints": {"toy-ckpt": ckpt}})
    assert list(grid.checkpoints) == ["toy-ckpt"] and not grid.has_reference("toy-ckpt") and not grid.offline
    assert build_grid({**base, "checkpoints": {"toy-ckpt": ckpt}, "offline": True}).offline
    assert build_grid({**base, "checkpoints": {"toy-ckpt": ckpt}, "offline": "true"}).offline  # --config offline=true
    with pytest.raises(DpmbenchError, match=r"invalid config key 'offline'"):
        build_grid({**base, "checkpoints": {"toy-ckpt": ckpt}, "offline": "maybe"})
    with pytest.raises(DpmbenchError, match=r"invalid config key 'checkpoints.toy-ckpt.adapter': 'unet' is not one"):
        build_grid({**base, "checkpoints": {"toy-ckpt": {**ckpt, "adapter": "unet"}}})
    with pytest.raises(DpmbenchError, match=r"invalid config key 'checkpoints.toy-ckpt.licence': unknown key; "
                                            r"did you mean 'license'\?"):
        build_grid({**base, "checkpoints": {"toy-ckpt": {**ckpt, "licence": "x"}}})
    with pytest.raises(DpmbenchError, match=r"invalid config key 'models.toy-ckpt': unknown model; allowed: gmm-2d"):
        build_grid(base)
    with pytest.raises(DpmbenchError, match=r"invalid config key 'guidance'.*unconditional"):
        build_grid({**base, "guidance": [2.0], "checkpoints": {"toy-ckpt": ckpt}})
    assert build_grid({**base, "guidance": [2.0], "checkpoints": {"toy-ckpt": {**ckpt, "conditioning": "text"}}})
