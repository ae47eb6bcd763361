"""A BPF object file opened, configured, loaded and attached through libbpf.

The event layout lives only in the C headers: `struct_dtype` builds the numpy
view of a struct from the object's BTF, so Python never restates it.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
from pathlib import Path

import numpy as np

from capture import _libbpf as L
from runfmt.errors import CaptureError

log = logging.getLogger("capture.libbpf")

# the last libbpf warnings, quoted in errors so a failed load explains itself
_recent_warnings: collections.deque[str] = collections.deque(maxlen=20)
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


@L.PRINT_FN
def _on_libbpf_print(level: int, fmt: bytes, va_list: int) -> int:
    message = L.format_va(fmt, va_list).rstrip()
    if level == 0:
        _recent_warnings.append(message)
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", message)
    return 0


_print_installed = False


def _install_print() -> None:
    global _print_installed
    if not _print_installed:
        L.lib().libbpf_set_print(_on_libbpf_print)
        _print_installed = True


def _errno_text(default: int = 0) -> str:
    err = ctypes.get_errno() or default
    return f"{os.strerror(err)} (errno {err})" if err else "unknown error"


def _last_warning() -> str:
    for line in reversed(_recent_warnings):
        if line:
            return line
    return ""


class BpfObject:
    """One `.bpf.o`: open → set_rodata/set_autoload/resize_map → load → attach → close."""

    def __init__(self, path: str | Path) -> None:
        _install_print()
        self.path = Path(path)
        self.name = self.path.name.removesuffix(".bpf.o")
        self._lib = L.lib()
        self._links: list[int] = []
        self.loaded = False
        if not self.path.is_file():
            raise CaptureError(
                f"BPF object {str(self.path)!r} does not exist",
                "run 'make bpf' (or 'make setup') to build the probes",
            )
        ctypes.set_errno(0)
        self._obj = self._lib.bpf_object__open_file(str(self.path).encode(), None)
        if not self._obj:
            raise CaptureError(f"cannot open BPF object {str(self.path)!r}: {_errno_text()}",
                               "rebuild it with 'make bpf'")
        self._btf = self._lib.bpf_object__btf(self._obj)

    # -- before load -----------------------------------------------------

    def _program(self, name: str) -> int:
        prog = self._lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not prog:
            raise CaptureError(f"program {name!r} not found in {self.path.name}")
        return prog

    def _map(self, name: str) -> int:
        found = self._lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if found:
            return found
        # global-data maps are named "<object prefix>.<section>", e.g. "dns_bpf.rodata"
        m = self._lib.bpf_object__next_map(self._obj, None)
        while m:
            if self._lib.bpf_map__name(m).decode().endswith(name):
                return m
            m = self._lib.bpf_object__next_map(self._obj, m)
        raise CaptureError(f"map {name!r} not found in {self.path.name}")

    def programs(self) -> list[str]:
        names = []
        p = self._lib.bpf_object__next_program(self._obj, None)
        while p:
            names.append(self._lib.bpf_program__name(p).decode())
            p = self._lib.bpf_object__next_program(self._obj, p)
        return names

    def set_autoload(self, program: str, on: bool) -> None:
        if self._lib.bpf_program__set_autoload(self._program(program), on) != 0:
            raise CaptureError(f"cannot change autoload of {program!r}: already loaded")

    def resize_map(self, name: str, max_entries: int) -> None:
        if self._lib.bpf_map__set_max_entries(self._map(name), max_entries) != 0:
            raise CaptureError(f"cannot resize map {name!r} to {max_entries} entries")

    def reuse_map(self, name: str, fd: int) -> None:
        """Makes this object use another object's map (before load): one map, many programs."""
        err = self._lib.bpf_map__reuse_fd(self._map(name), fd)
        if err:
            raise CaptureError(f"cannot share map {name!r} with {self.path.name}: {os.strerror(-err)}")

    def set_rodata(self, **values: int) -> None:
        """Sets `const volatile` globals; they become constants at load time."""
        self.set_initial(".rodata", **values)

    def set_initial(self, section_name: str, **values: int) -> None:
        """Sets globals of a data section (.rodata, .data.tune ...) before load."""
        section = self._section_vars(section_name)
        size = ctypes.c_size_t()
        base = self._lib.bpf_map__initial_value(self._map(section_name), ctypes.byref(size))
        if not base:
            raise CaptureError(f"{self.path.name} has no {section_name} to configure")
        for name, value in values.items():
            if name not in section:
                raise CaptureError(
                    f"{self.path.name} has no setting {name!r}",
                    f"known settings: {', '.join(sorted(section))}",
                )
            offset, var_size, signed = section[name]
            raw = int(value).to_bytes(var_size, "little", signed=signed)
            ctypes.memmove(base + offset, raw, var_size)

    def load(self) -> None:
        _recent_warnings.clear()
        ctypes.set_errno(0)
        err = self._lib.bpf_object__load(self._obj)
        if err:
            detail = _last_warning()
            raise CaptureError(
                f"cannot load {self.path.name}: {os.strerror(-err)} (errno {-err})"
                + (f": {detail}" if detail else ""),
                "run 'slocap doctor' to see which hooks this kernel allows; '-v' shows libbpf's log",
            )
        self.loaded = True

    # -- after load ------------------------------------------------------

    def attach(self, program: str) -> None:
        """Attaches by section name: tp/, tp_btf/, raw_tp/."""
        ctypes.set_errno(0)
        link = self._lib.bpf_program__attach(self._program(program))
        if not link:
            raise CaptureError(f"cannot attach {program!r} of {self.path.name}: {_errno_text()}",
                               "is tracefs mounted? 'slocap doctor' checks the hooks")
        self._links.append(link)

    def attach_uprobe(self, program: str, binary: str, func: str, *,
                      retprobe: bool = False, pid: int = -1, cookie: int = 0) -> None:
        opts = L.UprobeOpts(sz=ctypes.sizeof(L.UprobeOpts), retprobe=retprobe,
                            func_name=func.encode(), bpf_cookie=cookie)
        ctypes.set_errno(0)
        link = self._lib.bpf_program__attach_uprobe_opts(
            self._program(program), pid, binary.encode(), 0, ctypes.byref(opts))
        if not link:
            kind = "uretprobe" if retprobe else "uprobe"
            raise CaptureError(f"cannot attach {kind} {binary}:{func}: {_errno_text()}",
                               "check the library path: 'slocap doctor' lists the libraries it found")
        self._links.append(link)

    def map_fd(self, name: str) -> int:
        fd = self._lib.bpf_map__fd(self._map(name))
        if fd < 0:
            raise CaptureError(f"map {name!r} of {self.path.name} has no fd: load first")
        return fd

    def read_global(self, section: str, name: str) -> int:
        """Reads a global variable of a loaded object (.bss or .data) from the kernel."""
        offset, size, signed = self._section_vars(section)[name]
        value_size = self._lib.bpf_map__value_size(self._map(section))
        buf = ctypes.create_string_buffer(value_size)
        key = ctypes.c_uint32(0)
        if self._lib.bpf_map_lookup_elem(self.map_fd(section), ctypes.byref(key), buf) != 0:
            raise CaptureError(f"cannot read {section} of {self.path.name}: {_errno_text()}")
        return int.from_bytes(buf.raw[offset:offset + size], "little", signed=signed)

    def write_global(self, section: str, name: str, value: int) -> None:
        """Changes a global of a loaded object that only user space writes (.data.tune)."""
        offset, size, signed = self._section_vars(section)[name]
        value_size = self._lib.bpf_map__value_size(self._map(section))
        buf = ctypes.create_string_buffer(value_size)
        key = ctypes.c_uint32(0)
        fd = self.map_fd(section)
        if self._lib.bpf_map_lookup_elem(fd, ctypes.byref(key), buf) != 0:
            raise CaptureError(f"cannot read {section} of {self.path.name}: {_errno_text()}")
        ctypes.memmove(ctypes.addressof(buf) + offset, int(value).to_bytes(size, "little", signed=signed), size)
        if self._lib.bpf_map_update_elem(fd, ctypes.byref(key), buf, 0) != 0:
            raise CaptureError(f"cannot write {section} of {self.path.name}: {_errno_text()}")

    def update_elem(self, map_name: str, key: int, value: int) -> None:
        """Sets a u32 → u32 entry, e.g. a cgroup fd in a CGROUP_ARRAY."""
        k, v = ctypes.c_uint32(key), ctypes.c_uint32(value)
        if self._lib.bpf_map_update_elem(self.map_fd(map_name), ctypes.byref(k), ctypes.byref(v), 0) != 0:
            raise CaptureError(f"cannot set {map_name}[{key}] of {self.path.name}: {_errno_text()}")

    def percpu_sum(self, map_name: str, key: int = 0) -> int:
        """Sum over every possible CPU of a u64 PERCPU_ARRAY entry."""
        ncpu = self._lib.libbpf_num_possible_cpus()
        if ncpu <= 0:
            raise CaptureError(f"cannot count this host's CPUs: {_errno_text(-ncpu)}")
        values = (ctypes.c_uint64 * ncpu)()
        k = ctypes.c_uint32(key)
        if self._lib.bpf_map_lookup_elem(self.map_fd(map_name), ctypes.byref(k), values) != 0:
            raise CaptureError(f"cannot read {map_name}[{key}] of {self.path.name}: {_errno_text()}")
        return sum(values)

    def has_global(self, section: str, name: str) -> bool:
        return name in self._section_vars(section)

    def program_fds(self) -> dict[str, int]:
        """fd of every loaded program, by name."""
        fds = {}
        p = self._lib.bpf_object__next_program(self._obj, None)
        while p:
            fd = self._lib.bpf_program__fd(p)
            if fd >= 0:
                fds[self._lib.bpf_program__name(p).decode()] = fd
            p = self._lib.bpf_object__next_program(self._obj, p)
        return fds

    def detach(self) -> None:
        while self._links:
            self._lib.bpf_link__destroy(self._links.pop())

    def close(self) -> None:
        self.detach()
        if self._obj:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- BTF -------------------------------------------------------------

    def struct_dtype(self, struct: str) -> np.dtype:
        """numpy dtype of a C struct, nested structs flattened, from the object's BTF."""
        type_id = self._lib.btf__find_by_name_kind(self._btf, struct.encode(), L.BTF_KIND_STRUCT)
        if type_id < 0:
            raise CaptureError(f"struct {struct!r} is not in the BTF of {self.path.name}")
        names: list[str] = []
        formats: list[object] = []
        offsets: list[int] = []
        self._flatten(type_id, 0, names, formats, offsets)
        size = self._lib.btf__resolve_size(self._btf, type_id)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})

    def _type(self, type_id: int) -> tuple[int, L.BtfType]:
        t = self._lib.btf__type_by_id(self._btf, type_id).contents
        return (t.info >> 24) & 0x1F, t

    def _skip_modifiers(self, type_id: int) -> int:
        while True:
            kind, t = self._type(type_id)
            if kind not in (L.BTF_KIND_TYPEDEF, L.BTF_KIND_VOLATILE,
                            L.BTF_KIND_CONST, L.BTF_KIND_RESTRICT):
                return type_id
            type_id = t.size_or_type

    def _trailing(self, t: L.BtfType, cls: type, count: int) -> ctypes.Array:
        return (cls * count).from_address(ctypes.addressof(t) + ctypes.sizeof(L.BtfType))

    def _scalar(self, type_id: int) -> str:
        kind, t = self._type(self._skip_modifiers(type_id))
        if kind == L.BTF_KIND_ENUM:
            return f"<i{t.size_or_type}"
        if kind != L.BTF_KIND_INT:
            raise CaptureError(f"BTF kind {kind} is not a supported event field")
        encoding = (self._trailing(t, ctypes.c_uint32, 1)[0] >> 24) & 0xF
        return f"<{'i' if encoding & L.BTF_INT_SIGNED else 'u'}{t.size_or_type}"

    def _flatten(self, type_id: int, base: int, names: list, formats: list, offsets: list) -> None:
        _, t = self._type(type_id)
        for m in self._trailing(t, L.BtfMember, t.info & 0xFFFF):
            name = self._lib.btf__name_by_offset(self._btf, m.name_off).decode()
            member_id = self._skip_modifiers(m.type)
            kind, mt = self._type(member_id)
            offset = base + m.offset // 8  # no bitfields in event structs
            if kind == L.BTF_KIND_STRUCT:
                self._flatten(member_id, offset, names, formats, offsets)
                continue
            if kind == L.BTF_KIND_ARRAY:
                arr = self._trailing(mt, L.BtfArray, 1)[0]
                item = self._scalar(arr.type)
                # char arrays are strings; other byte arrays stay raw bytes
                elem = self._type(self._skip_modifiers(arr.type))[1]
                is_char = self._lib.btf__name_by_offset(self._btf, elem.name_off) == b"char"
                fmt: object = f"S{arr.nelems}" if is_char else (item, (arr.nelems,))
            else:
                fmt = self._scalar(member_id)
            names.append(name)
            formats.append(fmt)
            offsets.append(offset)

    def _section_vars(self, section: str) -> dict[str, tuple[int, int, bool]]:
        """name → (offset, size, signed) of each variable in a data section."""
        sec_id = self._lib.btf__find_by_name_kind(self._btf, section.encode(), L.BTF_KIND_DATASEC)
        if sec_id < 0:
            return {}
        _, sec = self._type(sec_id)
        out = {}
        for info in self._trailing(sec, L.BtfVarSecinfo, sec.info & 0xFFFF):
            _, var = self._type(info.type)
            name = self._lib.btf__name_by_offset(self._btf, var.name_off).decode()
            kind, t = self._type(self._skip_modifiers(var.size_or_type))
            signed = kind == L.BTF_KIND_INT and bool(
                (self._trailing(t, ctypes.c_uint32, 1)[0] >> 24) & L.BTF_INT_SIGNED)
            out[name] = (info.offset, info.size, signed)
        return out
