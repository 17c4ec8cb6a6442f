"""A tiny image for the SDK tests: a `docker save` tarball holding the host's static busybox (sh, cat, echo, id,
touch), a /bin/bash that hands over to it (E2B's SDK runs commands with /bin/bash -l -c), an /etc/motd, and a
config whose Env sets PATH and GREETING. Imported with `airlock image import FILE`."""

import hashlib
import io
import json
import os
import shutil
import tarfile


def _add(t, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    t.addfile(info, io.BytesIO(data))


def write_busybox_image(path, tag, motd=b"from the image\n"):
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is installed by scripts/setup-debian"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for d in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            t.addfile(info)
        t.add(os.path.realpath(busybox), arcname="bin/busybox")
        for tool in ("sh", "cat", "echo", "id", "touch", "ls"):
            info = tarfile.TarInfo(f"bin/{tool}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(info)
        _add(t, "etc/motd", motd)
        _add(t, "bin/bash", b'#!/bin/sh\nexec /bin/sh "$@"\n', 0o755)
    layer = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/bin", "GREETING=hello"], "Cmd": ["sh"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, data in (("config.json", config), ("layer/layer.tar", layer), ("manifest.json", manifest)):
            _add(t, name, data)
