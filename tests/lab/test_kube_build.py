"""lab.kube.build without network or Go: the wrapper go.mod generated from an upstream go.mod
text, the version flags, and the cache stamp (returns at once when built, rebuilds when the
inputs change, never leaves a half build)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lab.kube import build

UPSTREAM_GOMOD = """\
// This is a generated file. Do not edit directly.

module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
	github.com/blang/semver/v4 v4.0.0
	go.etcd.io/etcd/client/v3 v3.6.4
	k8s.io/api v0.0.0
	k8s.io/kubectl v0.0.0 // a comment
)

require (
	go.etcd.io/etcd/server/v3 v3.6.4 // indirect
)

require github.com/single/line v1.2.3

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
	// k8s.io/commented => ./staging/src/k8s.io/commented
	k8s.io/cri-api => ./staging/src/k8s.io/cri-api
	github.com/other/module => github.com/fork/module v1.0.0
)

replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl
"""


def test_staging_modules_are_the_replacements_into_staging() -> None:
    assert build.staging_modules(UPSTREAM_GOMOD) == [
        "k8s.io/api",
        "k8s.io/apimachinery",
        "k8s.io/cri-api",
        "k8s.io/kubectl",
    ]


@pytest.mark.parametrize(
    ("version", "staging"),
    [("v1.34.4", "v0.34.4"), ("v1.30.0", "v0.30.0"), ("v1.35.0-alpha.1", "v0.35.0-alpha.1")],
)
def test_staging_version(version: str, staging: str) -> None:
    assert build.staging_version(version) == staging


def test_staging_version_rejects_other_tags() -> None:
    with pytest.raises(ValueError):
        build.staging_version("v2.0.0")


def test_required_versions_directives() -> None:
    assert build.required_version(UPSTREAM_GOMOD, "go.etcd.io/etcd/server/v3") == "v3.6.4"
    assert build.required_version(UPSTREAM_GOMOD, "k8s.io/kubectl") == "v0.0.0"
    assert build.required_version(UPSTREAM_GOMOD, "github.com/single/line") == "v1.2.3"
    assert build.required_version(UPSTREAM_GOMOD, "example.com/absent") is None
    assert build.go_directive(UPSTREAM_GOMOD) == "1.24.0"
    assert build.godebug_settings(UPSTREAM_GOMOD) == ["default=go1.24"]


def test_wrapper_gomod_pins_every_staging_module() -> None:
    replaces = build.kube_replaces(UPSTREAM_GOMOD, "v1.34.4")
    text = build.wrapper_gomod(
        "skein.local/lab/kube",
        "1.24.0",
        {"k8s.io/kubernetes": "v1.34.4", "go.etcd.io/etcd/server/v3": "v3.6.4"},
        replaces,
        ["default=go1.24"],
    )
    lines = text.splitlines()
    assert "module skein.local/lab/kube" in lines
    assert "go 1.24.0" in lines
    assert "godebug default=go1.24" in lines
    assert "\tk8s.io/kubernetes v1.34.4" in lines
    assert "\tgo.etcd.io/etcd/server/v3 v3.6.4" in lines
    for module in ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/cri-api", "k8s.io/kubectl"):
        assert f"\t{module} => {module} v0.34.4" in lines
    assert "github.com/other/module" not in text
    # The pins are the generated go.mod's own: parsing it back gives them again.
    assert build.required_version(text, "k8s.io/kubernetes") == "v1.34.4"


def test_kube_wrapper_gomod_requires_the_pinned_versions() -> None:
    text = build.kube_wrapper_gomod(UPSTREAM_GOMOD, "v1.34.4", "v3.6.4")
    for module in build.staging_modules(UPSTREAM_GOMOD):
        assert f"\t{module} => {module} v0.34.4" in text.splitlines()
    # Required as well where upstream requires them; the others are only replaced.
    assert build.required_version(text, "k8s.io/api") == "v0.34.4"
    assert build.required_version(text, "k8s.io/kubectl") == "v0.34.4"
    assert build.required_version(text, "k8s.io/apimachinery") is None
    assert build.required_version(text, "k8s.io/kubernetes") == "v1.34.4"
    assert build.required_version(text, build.ETCD_MODULE) == "v3.6.4"
    assert build.go_directive(text) == "1.24.0"
    assert build.godebug_settings(text) == ["default=go1.24"]


def test_kube_replaces_needs_staging_lines() -> None:
    with pytest.raises(ValueError):
        build.kube_replaces("module x\n\ngo 1.24\n", "v1.34.4")


def test_version_ldflags() -> None:
    flags = build.version_ldflags("v1.34.4", "2026-02-10T12:53:36Z")
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=34" in flags
    assert "-X k8s.io/component-base/version.buildDate=2026-02-10T12:53:36Z" in flags
    assert all(" " not in f.removeprefix("-X ") for f in flags)


def test_pause_tag() -> None:
    assert build.pause_tag("FOO = 1\nTAG ?= 3.10.1\nREV = x\n") == "3.10.1"
    assert build.pause_tag("nothing\n") == "unknown"


def test_multicall_source_dispatches_every_component() -> None:
    for name in build.CORE_COMPONENTS:
        assert f'"{name}":' in build.MULTICALL_MAIN


def test_input_key_follows_the_inputs() -> None:
    key = build.input_key(build.core_inputs())
    assert key == build.input_key(build.core_inputs())
    assert build.input_key({"a": 1, "b": 2}) == build.input_key({"b": 2, "a": 1})
    assert key != build.input_key(build.core_inputs(version="v1.34.5"))
    assert key != build.input_key(build.core_inputs(multicall=not build.MULTICALL))
    assert build.input_key(build.e2e_inputs()) != build.input_key(
        build.e2e_inputs(coredns="v1.12.2")
    )


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(build.CACHE_ENV, raising=False)
    assert build.cache_root() == Path(build.DEFAULT_CACHE)
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path / "env"))
    assert build.cache_root() == tmp_path / "env"
    assert build.cache_root(str(tmp_path / "arg")) == tmp_path / "arg"


def _fake_binaries(directory: Path, names: list[str]) -> None:
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = bin_dir / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)


def test_stamp_valid(tmp_path: Path) -> None:
    names = ["a", "b"]
    assert not build.stamp_valid(tmp_path, "k1", names)
    _fake_binaries(tmp_path, names)
    assert not build.stamp_valid(tmp_path, "k1", names)  # binaries but no stamp
    build.write_stamp(tmp_path, "k1", {"note": "x"})
    assert build.stamp_valid(tmp_path, "k1", names)
    assert build.read_stamp(tmp_path) == {"key": "k1", "note": "x"}
    assert not build.stamp_valid(tmp_path, "k2", names)
    assert not build.stamp_valid(tmp_path, "k1", [*names, "c"])
    (tmp_path / "bin" / "b").chmod(0o644)
    assert not build.stamp_valid(tmp_path, "k1", names)
    (tmp_path / "bin" / "b").chmod(0o755)
    (tmp_path / "bin" / "link").symlink_to("a")
    assert build.stamp_valid(tmp_path, "k1", [*names, "link"])
    (tmp_path / build.STAMP).write_text("not json")
    assert not build.stamp_valid(tmp_path, "k1", names)


class _Builder:
    def __init__(self, names: list[str], fail: bool = False) -> None:
        self.names = names
        self.fail = fail
        self.calls = 0

    def __call__(self, tmp: Path) -> dict[str, Any]:
        self.calls += 1
        _fake_binaries(tmp, self.names[:1])
        if self.fail:
            raise build.BuildError("go build failed (exit 1): boom")
        _fake_binaries(tmp, self.names)
        return {"calls": self.calls}


def test_ensure_builds_once_and_rebuilds_on_new_inputs(tmp_path: Path) -> None:
    names = ["kube-apiserver", "etcd"]
    builder = _Builder(names)
    logs: list[str] = []
    bin_dir = build.ensure_built(tmp_path, "k", "key1", names, builder, logs.append)
    assert bin_dir == tmp_path / "k" / "bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(names)
    assert build.ensure_built(tmp_path, "k", "key1", names, builder, logs.append) == bin_dir
    assert builder.calls == 1
    assert build.ensure_built(tmp_path, "k", "key2", names, builder, logs.append) == bin_dir
    assert builder.calls == 2
    assert build.read_stamp(tmp_path / "k") == {"key": "key2", "calls": 2}
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o755
    # Nothing but the output, its lock and no temporary or set-aside directory remains.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k.lock", "k"]


def test_failed_build_leaves_no_half_cache(tmp_path: Path) -> None:
    names = ["kube-apiserver", "etcd"]
    with pytest.raises(build.BuildError):
        build.ensure_built(tmp_path, "k", "key1", names, _Builder(names, fail=True), print)
    assert not (tmp_path / "k").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k.lock"]

    build.ensure_built(tmp_path, "k", "key1", names, _Builder(names), print)
    with pytest.raises(build.BuildError):
        build.ensure_built(tmp_path, "k", "key2", names, _Builder(names, fail=True), print)
    # The previous complete build is left as it was (and stays stale for key2).
    assert build.stamp_valid(tmp_path / "k", "key1", names)
    assert not build.stamp_valid(tmp_path / "k", "key2", names)


def test_leftovers_of_an_interrupted_build_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".k.tmp-abc" / "bin").mkdir(parents=True)
    (tmp_path / ".k.old-123").mkdir()
    # Another output's build (its own lock) whose name starts with this one's is left alone.
    (tmp_path / ".k-e2e.tmp-abc").mkdir()
    names = ["x"]
    build.ensure_built(tmp_path, "k", "key1", names, _Builder(names), print)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k-e2e.tmp-abc", ".k.lock", "k"]


def test_main_reports_one_line_on_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def fail(cache: str | None = None, log: build.Log = print) -> Path:
        raise build.BuildError("go build failed (exit 1): cannot find module")

    monkeypatch.setattr(build, "ensure_kubernetes", fail)
    assert build.main(["--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lab.kube.build: error: go build failed (exit 1): cannot find module"]


def test_main_prints_the_bin_dirs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: list[str | None] = []

    def fake(name: str) -> Any:
        def ensure(cache: str | None = None, log: build.Log = print) -> Path:
            seen.append(cache)
            return tmp_path / name / "bin"

        return ensure

    monkeypatch.setattr(build, "ensure_kubernetes", fake("core"))
    monkeypatch.setattr(build, "ensure_e2e", fake("e2e"))
    assert build.main(["--cache", str(tmp_path), "--with-e2e"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "core" / "bin"), str(tmp_path / "e2e" / "bin")]
    assert seen == [str(tmp_path), str(tmp_path)]


def test_no_network_or_go_needed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A valid cache answers with no go command on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    root = tmp_path / "cache"
    final = root / f"kubernetes-{build.KUBERNETES_VERSION}"
    names = build.core_binaries()
    _fake_binaries(final, names)
    build.write_stamp(final, build.input_key(build.core_inputs()), {})
    assert build.ensure_kubernetes(str(root), print) == final / "bin"
    assert os.environ["PATH"] == str(tmp_path / "empty")
