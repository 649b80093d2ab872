"""Downloads: sha256 verification, resume, offline mode (local HTTP server on 127.0.0.1), manifest stats."""

from __future__ import annotations

import hashlib
import http.server
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import local_http_server

from dpmbench.download import fetch, verify_sha256
from dpmbench.errors import DpmbenchError

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /good.bin and a corrupted copy at /bad.bin; honours 'Range: bytes=N-'."""

    requests: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).requests.append((self.path, self.headers.get("Range")))
        body = PAYLOAD if self.path == "/good.bin" else PAYLOAD[:-1] + b"X" if self.path == "/bad.bin" else None
        if body is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    _Handler.requests = []
    with local_http_server(_Handler, timeout=5) as url:
        yield url


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DPMBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("DPMBENCH_OFFLINE", raising=False)
    return tmp_path


SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.mark.timeout(60)
def test_fetch_verifies_and_caches(server: str, cache: Path) -> None:
    p = fetch(f"{server}/good.bin", SHA, timeout=10)
    assert p.read_bytes() == PAYLOAD and p.parent == cache / "downloads"
    assert fetch(f"{server}/good.bin", SHA, timeout=10) == p
    assert len(_Handler.requests) == 1  # second call served from the cache


@pytest.mark.timeout(60)
def test_fetch_rejects_corrupted_download(server: str, cache: Path) -> None:
    with pytest.raises(DpmbenchError, match=f"checksum mismatch .* expected {SHA}"):
        fetch(f"{server}/bad.bin", SHA, filename="good.bin", timeout=10)
    assert not list((cache / "downloads").iterdir())  # nothing unverified left behind


@pytest.mark.timeout(60)
def test_fetch_resumes_a_partial_download(server: str, cache: Path) -> None:
    part = cache / "downloads" / "good.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:30000])
    assert fetch(f"{server}/good.bin", SHA, timeout=10).read_bytes() == PAYLOAD
    assert _Handler.requests == [("/good.bin", "bytes=30000-")]


@pytest.mark.timeout(60)
def test_offline_never_connects_and_names_the_file(server: str, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("DPMBENCH_OFFLINE", "1")
    with pytest.raises(DpmbenchError, match=r"offline .* place it at .*downloads/good.bin \(sha256"):
        fetch(f"{server}/good.bin", SHA, timeout=10)
    assert _Handler.requests == []
    (cache / "downloads").mkdir(exist_ok=True)
    (cache / "downloads" / "good.bin").write_bytes(PAYLOAD)
    assert fetch(f"{server}/good.bin", SHA).read_bytes() == PAYLOAD and _Handler.requests == []


@pytest.mark.timeout(60)
def test_unreachable_server_is_a_clear_error(cache: Path) -> None:
    with pytest.raises(DpmbenchError, match="download of http://127.0.0.1:9/x.bin failed .* place the file at"):
        fetch("http://127.0.0.1:9/x.bin", SHA, timeout=5)


def test_manifest_stats_checksum_rejects_corrupted_file(tmp_path: Path, server: str, cache: Path) -> None:
    from evaluators.refstats import load_manifest, reference_stats

    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(tmp_path / "s.npz", mu=mu, sigma=sigma)
    good = hashlib.sha256((tmp_path / "s.npz").read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.yaml"
    entry = {"name": "toy", "dataset": "toy", "split": "train", "resolution": 8, "inception": "dpmbench/test",
             "path": "s.npz", "sha256": good}
    unpinned = dict(entry, name="unpinned", sha256=None, path=None, url=f"{server}/good.bin")
    manifest.write_text(yaml.safe_dump({"stats": [entry, unpinned]}))
    m, s, what = reference_stats("toy", manifest)
    np.testing.assert_array_equal(m, mu) and np.testing.assert_array_equal(s, sigma)
    assert "toy (toy/train, 8px" in what
    with open(tmp_path / "s.npz", "r+b") as fh:  # corrupt one byte
        fh.seek(200)
        b = fh.read(1)
        fh.seek(200)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(DpmbenchError, match="checksum mismatch for reference stats 'toy'"):
        reference_stats("toy", manifest)
    with pytest.raises(DpmbenchError, match="no sha256 pinned"):
        reference_stats("unpinned", manifest)
    assert _Handler.requests == []  # an unpinned entry is never downloaded
    with pytest.raises(DpmbenchError, match="invalid reference stats 'nope'; allowed: toy, unpinned"):
        reference_stats("nope", manifest)
    assert set(load_manifest()) >= {"digits-cnn-digits"}


def test_shipped_digits_stats_match_the_extractor() -> None:
    """The shipped moments are float64 reductions of the CNN's float32 features. Another CPU (other SIMD kernels,
    BLAS, thread count) moves each feature by a few float32 ulps (seen: 1.9e-8 relative, 1.1e-7 absolute), so the
    moments agree to float32 precision of the features' scale, not to float64's: |dmu| <= df and
    |dsigma| <= 2 |f| df, with df = 64 float32 ulps of max |f| (the network's layers accumulate rounding).
    A different extractor or image set moves them by O(|f|), a million times more."""
    from evaluators.images import digits_reference_features, feature_moments
    from evaluators.refstats import reference_stats

    mu, sigma, _ = reference_stats("digits-cnn-digits")
    f = digits_reference_features()  # the network's float32 outputs, held as float64
    m, s = feature_moments(f)
    scale = float(np.abs(f).max())
    df = 64 * float(np.finfo(np.float32).eps) * scale
    np.testing.assert_allclose(mu, m, rtol=0, atol=df)
    np.testing.assert_allclose(sigma, s, rtol=0, atol=2 * scale * df)


def test_verify_sha256_prefix(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(PAYLOAD)
    assert verify_sha256(p, SHA[:8]) == p
    with pytest.raises(DpmbenchError, match="checksum mismatch"):
        verify_sha256(p, "00000000")


@pytest.mark.timeout(60)
def test_corrupted_cached_file_is_fetched_again(server: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = fetch(f"{server}/good.bin", SHA, timeout=10)
    p.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])  # truncated, e.g. by a copy killed half-way
    assert fetch(f"{server}/good.bin", SHA, timeout=10) == p and p.read_bytes() == PAYLOAD
    assert len(_Handler.requests) == 2  # fetched again, not used
    p.write_bytes(b"X" + PAYLOAD[1:])  # corrupted in place; offline there is nothing to fetch it from
    monkeypatch.setenv("DPMBENCH_OFFLINE", "1")
    with pytest.raises(DpmbenchError, match="checksum mismatch for cached file"):
        fetch(f"{server}/good.bin", SHA, timeout=10)
