"""A private iceoryx2 namespace for one benchmark channel.

iceoryx2 keeps a node's global management segment in /dev/shm and its
service and node directories under /tmp/iceoryx2 after the node is gone, and
shares them with every other iceoryx2 user of the machine under the default
prefix. A benchmark must leave /dev/shm as it found it without touching
anybody else's files, so each channel gets its own file prefix and root
directory, both named after the channel, and removes them when it closes.
"""

from __future__ import annotations

import os
import shutil
from types import ModuleType
from typing import Any

SHM_DIR = "/dev/shm"


def _root(tag: str) -> str:
    return os.path.join("/tmp", tag) + "/"


def node(iox2: ModuleType, tag: str) -> Any:
    """An iceoryx2 IPC node in the namespace `tag` (a channel's unique name:
    letters, digits, '-', '_'); every process of the channel passes the same."""
    config = iox2.config.default()
    config.global_cfg.prefix = iox2.FileName.new(f"{tag}_")
    config.global_cfg.root_path = iox2.Path.new(_root(tag))
    return iox2.NodeBuilder.new().config(config).create(iox2.ServiceType.Ipc)


def remove(tag: str) -> None:
    """Remove what iceoryx2 left of the namespace `tag` (call once every
    process of the channel is done with it)."""
    prefix = f"{tag}_"
    for name in os.listdir(SHM_DIR):
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except FileNotFoundError:
                pass
    shutil.rmtree(_root(tag), ignore_errors=True)
