"""libvirt's QEMU save image: read and validate one, and write a copy that embeds other domain XML.

The save image's layout (libvirt `src/qemu/qemu_saveimage.h`, stable on-disk ABI): a 92-byte
header in host byte order (`magic[16]` = "LibvirtQemudSave", then uint32 `version` (2),
`data_len`, `was_running`, `format` (0 = raw), `cookieOffset`, `unused[14]`), then `data_len`
bytes holding the NUL-terminated domain XML and, at `cookieOffset`, a NUL-terminated cookie, the
rest NUL padding (libvirt leaves 64 KiB of room so the XML may be edited), then QEMU's migration
stream. The header is validated strictly (magic, version, raw format, sizes, NUL terminators) and
anything else is refused; the new XML must fit in the same `data_len`, so the stream's offset
never moves.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import TemplateInvalid

SAVE_MAGIC = b"LibvirtQemudSave"
SAVE_VERSION = 2
SAVE_FORMAT_RAW = 0
# magic, version, data_len, was_running, format, cookieOffset, unused[14]: little-endian on x86.
_HEADER = struct.Struct("<16s5I14I")
# libvirt's XML area is the XML plus 64 KiB; anything far bigger is not a save image we made.
MAX_DATA_LEN = 4 * 1024 * 1024


@dataclass(frozen=True)
class SaveImage:
    """A validated libvirt save image: its header fields and the embedded domain XML and cookie."""

    was_running: int
    data_len: int
    xml: str
    cookie: bytes

    @property
    def stream_offset(self) -> int:
        """Where QEMU's migration stream starts."""
        return _HEADER.size + self.data_len


def read_save_image(path: Path) -> SaveImage:
    """Read and validate a save image's header and XML; TemplateInvalid on anything unexpected."""
    with open(path, "rb") as f:
        raw = f.read(_HEADER.size)
        if len(raw) != _HEADER.size:
            raise TemplateInvalid(f"{path}: shorter than a save image header")
        magic, version, data_len, was_running, fmt, cookie_offset, *_unused = _HEADER.unpack(raw)
        if magic != SAVE_MAGIC:
            raise TemplateInvalid(f"{path}: not a complete libvirt QEMU save image (magic {magic!r})")
        if version != SAVE_VERSION:
            raise TemplateInvalid(f"{path}: save image version {version}, expected {SAVE_VERSION}")
        if fmt != SAVE_FORMAT_RAW:
            raise TemplateInvalid(f"{path}: compressed save image (format {fmt}); only raw is supported")
        if not 0 < data_len <= MAX_DATA_LEN:
            raise TemplateInvalid(f"{path}: implausible XML area of {data_len} bytes")
        data = f.read(data_len)
    if len(data) != data_len or os.path.getsize(path) <= _HEADER.size + data_len:
        raise TemplateInvalid(f"{path}: truncated save image")
    xml_end = data.find(b"\0")
    if xml_end <= 0:
        raise TemplateInvalid(f"{path}: the domain XML is not NUL-terminated")
    cookie = b""
    if cookie_offset:
        if not xml_end < cookie_offset < data_len:
            raise TemplateInvalid(f"{path}: cookie offset {cookie_offset} outside the XML area")
        cookie_end = data.find(b"\0", cookie_offset)
        if cookie_end < 0:
            raise TemplateInvalid(f"{path}: the cookie is not NUL-terminated")
        cookie = data[cookie_offset:cookie_end]
    return SaveImage(was_running, data_len, data[:xml_end].decode(), cookie)


def write_save_image(source: Path, target: Path, image: SaveImage, xml: str) -> None:
    """Write a copy of save image `source` to `target` (0600) that embeds `xml` instead.

    The XML area keeps its size, so the migration stream is copied unchanged at the same offset
    (copy_file_range: in-kernel, shares extents where the file system can)."""
    xml_bytes = xml.encode() + b"\0"
    cookie = image.cookie + b"\0" if image.cookie else b""
    used = len(xml_bytes) + len(cookie)
    if used > image.data_len:
        raise TemplateInvalid(f"{source}: the clone's XML ({used} bytes) does not fit in {image.data_len}")
    header = _HEADER.pack(
        SAVE_MAGIC, SAVE_VERSION, image.data_len, 1, SAVE_FORMAT_RAW, len(xml_bytes) if cookie else 0, *([0] * 14)
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(source, "rb") as src:
            os.write(fd, header + xml_bytes + cookie + b"\0" * (image.data_len - used))
            remaining = os.path.getsize(source) - image.stream_offset
            offset = image.stream_offset
            while remaining > 0:
                copied = os.copy_file_range(src.fileno(), fd, remaining, offset)
                if copied == 0:
                    raise TemplateInvalid(f"{source}: shorter than its header says")
                offset += copied
                remaining -= copied
    finally:
        os.close(fd)
