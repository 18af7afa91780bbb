"""lab.kube.image and install/Containerfile: the image built from the repository
holds what it promises (the venv with Skein and its gRPC stubs, nft, ip, the CNI
executables, the node runtime), runs the CNI executables on a "node" with no
Python left, is saved under the name the manifests pull and rebuilt only when its
sources change; the static busybox and pause images are laid out as the kubelet
and pods expect.

The image tests build with podman into the lab's cache ($SKEIN_LAB_CACHE or
/var/cache/skein-lab): the first run debootstraps Debian and builds the image (a
few minutes), later runs reuse both.  Checks inside an image run as RUN steps of a
throw-away `podman build --network none` on top of it: no container is started
with a network of podman's making, and nothing touches the root namespace.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from lab.kube import image

SKEIN_FILES = (
    "opt/skein/bin/skein-agent", "opt/skein/bin/skein-speaker", "opt/skein/bin/skein-controller",
    "opt/skein/bin/skeinctl", "usr/sbin/nft",
    "usr/local/lib/skein/cni/skein", "usr/local/lib/skein/cni/skein.pyz",
    "usr/local/lib/skein/cni/skein-ipam", "usr/local/lib/skein/install_cni.py",
    "usr/local/lib/skein/build_zipapps.py", "usr/local/lib/skein/runtime/bin/python3",
    "usr/local/lib/skein/runtime/runtime.json",
    "usr/local/lib/skein/runtime/lib/python3.11/os.pyc",
)


def need_podman() -> None:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.fail("podman and runc are not installed: apt-get install podman runc "
                    "debootstrap busybox-static (install/host-deps.sh)")


def built(call: Any, *args: Any, **kwargs: Any) -> Path:
    """Run an ensure_* function; an ImageError fails the test with its one line."""
    need_podman()
    try:
        archive: Path = call(*args, log=lambda line: print(line, file=sys.stderr), **kwargs)
    except image.ImageError as exc:
        pytest.fail(f"{call.__name__}: {exc}")
    return archive


def oci(archive: Path) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(ref name, image config, path -> type of every file of the layers: f, l, d)
    of an OCI archive from `podman save --format oci-archive`."""
    with tarfile.open(archive) as outer:
        def blob(digest: str) -> bytes:
            member = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert member is not None
            return member.read()

        index = json.loads(blob_of(outer, "index.json"))
        (entry,) = index["manifests"]
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        paths: dict[str, str] = {}
        for layer in manifest["layers"]:
            member = outer.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
            assert member is not None
            with tarfile.open(fileobj=member, mode="r:*") as tar:
                for info in tar:
                    name = info.name.removeprefix("./").rstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        paths.pop(name.replace(".wh.", "", 1), None)
                        continue
                    paths[name] = "l" if info.issym() else "d" if info.isdir() else "f"
    return entry["annotations"]["org.opencontainers.image.ref.name"], config, paths


def blob_of(outer: tarfile.TarFile, name: str) -> bytes:
    member = outer.extractfile(name)
    assert member is not None
    return member.read()


def run_in(base: str, script: str, tmp_path: Path) -> str:
    """`script` as a RUN step of a throw-away image FROM `base` (podman build
    --network none, in the lab's store); returns the build's output."""
    podman = image.Podman(image.cache_root())
    context = tmp_path / "check"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM {base}\nRUN {script}\n")
    name = f"localhost/skein-check:{int(time.time() * 1000)}"
    log = tmp_path / "check.log"
    try:
        podman.build(context, name, context / "Containerfile", log, network="none")
    except image.ImageError as exc:
        pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")
    finally:
        subprocess.run(podman.argv("rmi", "--force", name), env=podman.env,
                       capture_output=True, check=False)
    output = log.read_text()
    print(output[-3000:], file=sys.stderr)  # shown when an assertion fails
    return output


# --------------------------------------------------------------------------- no podman


def test_image_files_are_what_a_clean_checkout_holds():
    files = image.image_files()
    assert {"install/Containerfile", "setup.py", "pyproject.toml", "install/runtime.py",
            "cni_plugin/main.py", "speaker/api/skein.proto"} <= set(files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert not set(image.EXCLUDED_FILES) & set(files)  # the generated gRPC stubs
    assert not [f for f in files if f.startswith(("tests/", "lab/", ".git/"))]


def test_every_copy_of_the_containerfile_is_in_the_digest():
    """Each COPY source (but --from ones) is among IMAGE_SOURCES: a change to any
    file that goes into the image changes the digest."""
    text = (image.REPO / image.CONTAINERFILE).read_text()
    sources = [src for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
               for src in line.split()[:-1]]
    assert sources
    for src in sources:
        assert any(src == s or src.startswith(s + "/") for s in image.IMAGE_SOURCES), src


def test_digest_follows_the_sources(tmp_path):
    repo = tmp_path / "repo"
    for rel in image.image_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image.REPO / rel, repo / rel)
    first = image.source_digest(repo)
    assert first == image.source_digest(image.REPO)
    (repo / "speaker/api/skein_pb2.py").write_text("# generated\n")
    (repo / "cni_plugin/__pycache__").mkdir(exist_ok=True)
    (repo / "cni_plugin/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    assert image.source_digest(repo) == first
    with open(repo / "ipam/main.py", "a") as f:
        f.write("# changed\n")
    assert image.source_digest(repo) != first
    (repo / "ipam/main.py").unlink()
    shutil.copy2(image.REPO / "ipam/main.py", repo / "ipam/main.py")
    assert image.source_digest(repo) == first
    script = repo / "install/runtime.py"
    script.chmod(script.stat().st_mode ^ 0o111)
    assert image.source_digest(repo) != first  # the executable bit counts


def test_base_packages_and_mirror(tmp_path):
    packages = image.containerfile_packages()
    assert {"python3", "python3-venv", "patchelf", "nftables", "iproute2",
            "containernetworking-plugins"} == set(packages)
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm "
                       "bookworm-updates\nComponents: main\n\nTypes: deb\n"
                       "URIs: http://security.example/debian-security\n"
                       "Suites: bookworm-security\n")
    assert image.debian_mirror(sources) == "http://mirror.example/debian"
    assert image.debian_mirror(tmp_path / "missing") == image.MIRROR
    assert image.base_key(image.MIRROR, packages) != image.base_key(image.MIRROR, ["python3"])


def test_static_elf():
    assert image.static_elf(Path(image.BUSYBOX)), "busybox-static is not installed"
    assert not image.static_elf(Path("/bin/ls"))
    assert not image.static_elf(Path(__file__))


def test_cli_reports_errors_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lab.kube.image", "--cache", str(tmp_path),
                           "--pause", "/bin/ls"], capture_output=True, text=True,
                          cwd=image.REPO, env={"PATH": "/nonexistent"}, timeout=60,
                          check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("lab.kube.image: error: ") and "is not installed" in line


# --------------------------------------------------------------------------- podman


@pytest.mark.timeout(3600)
def test_skein_image_holds_what_it_promises(tmp_path, monkeypatch):
    start = time.monotonic()
    archive = built(image.ensure_skein_image)
    print(f"skein image: {archive} in {time.monotonic() - start:.0f} s", file=sys.stderr)
    # Cached: with nothing changed, no podman at all.
    with monkeypatch.context() as patch:
        patch.setattr(image, "Podman", None)
        assert image.ensure_skein_image(log=print) == archive
    name, config, paths = oci(archive)
    assert name == image.SKEIN_IMAGE
    assert config["config"]["Cmd"] == ["skein-agent", "--help"]
    assert "PATH=/opt/skein/bin:" in " ".join(config["config"]["Env"])
    missing = [p for p in SKEIN_FILES if paths.get(p) not in ("f", "l")]
    assert not missing, missing
    assert any(paths.get(p) == "f" for p in ("usr/bin/ip", "bin/ip", "sbin/ip", "usr/sbin/ip"))
    # The gRPC stubs setup.py generates at build time.
    assert [p for p in paths if p.endswith("site-packages/speaker/api/skein_pb2_grpc.py")]
    assert not [p for p in paths if p.startswith("src/") or "/grpc_tools/" in p]

    # A node with no Python: install_cni.py (bundled runtime, --root /), then
    # every python3 of the image gone, the executables exec'd with a bogus PATH.
    output = run_in(image.SKEIN_IMAGE, " && ".join([
        "skein-speaker --help >/dev/null", "nft --version", "ip -V",
        "python3 /usr/local/lib/skein/install_cni.py --root / --pod-cidr 10.99.0.0/24",
        "rm -rf /opt/skein /usr/bin/python3* /usr/lib/python3* /usr/local/lib/skein/runtime",
        "hash -r", "echo python3: $(command -v python3 || echo none)",
        "for p in skein skein-ipam; do echo $p: $(env -i PATH=/nonexistent "
        "CNI_COMMAND=VERSION /opt/cni/bin/$p </dev/null); done",
        "head -c 80 /opt/cni/bin/skein-ipam | head -1"]), tmp_path)
    assert "python3: none" in output
    for plugin in ("skein", "skein-ipam"):
        match = re.search(rf"^{plugin}: (\{{.*\}})$", output, re.M)
        assert match, output[-3000:]
        assert json.loads(match.group(1))["supportedVersions"][-1] == "1.1.0"
    assert re.search(r"^#!/opt/cni/bin/\.skein/runtime-[0-9a-f]{16}/bin/python3 -IS$", output,
                     re.M), output[-2000:]



@pytest.mark.timeout(600)
def test_busybox_image(tmp_path):
    archive = built(image.ensure_busybox_image)
    name, config, paths = oci(archive)
    assert name == image.BUSYBOX_IMAGE
    assert config["config"]["Cmd"] == ["sh"]
    assert paths["bin/busybox"] == "f" and paths["bin/sh"] == "l"
    assert paths["usr/bin/wget"] == "l" and paths["etc/passwd"] == "f" and paths["tmp"] == "d"
    output = run_in(image.BUSYBOX_IMAGE, '["/bin/sh", "-c", "echo hello from $(uname -s); '
                    'ls -ld /tmp; sleep 0"]', tmp_path)
    assert "hello from Linux" in output and "drwxrwxrwt" in output


@pytest.mark.timeout(600)
def test_pause_image(tmp_path, request):
    """Any static binary stands in for lab.kube.build's pause here; a dynamic one
    is refused.  A cache of its own: the lab's pause archive stays as it is."""
    cache = tmp_path / "cache"
    need_podman()
    request.addfinalizer(lambda: shutil.rmtree(image.Podman(cache).run_dir, ignore_errors=True))
    with pytest.raises(image.ImageError, match="not a static executable"):
        image.ensure_pause_image("/bin/ls", cache, log=print)
    archive = built(image.ensure_pause_image, image.BUSYBOX, cache,
                    name="localhost/skein-test/pause:1")
    name, config, paths = oci(archive)
    assert name == "localhost/skein-test/pause:1"
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"
    assert paths == {"pause": "f"}
    assert image.PAUSE_IMAGE == "registry.k8s.io/pause:3.10.1"


@pytest.mark.timeout(3600)
def test_cli_prints_the_archives():
    need_podman()
    proc = subprocess.run([sys.executable, "-m", "lab.kube.image"], capture_output=True,
                          text=True, cwd=image.REPO, timeout=3000, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert set(lines) == {image.SKEIN_IMAGE, image.BUSYBOX_IMAGE}
    assert all(Path(p).is_file() for p in lines.values())
