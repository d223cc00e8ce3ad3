"""What the trusted parent reads of a submission's folder: the code hash and the static check.

A submission's files are as hostile as its code: a symlink may lead out of
the folder or to a FIFO whose open() never returns, a file may be huge, a
tree deep. So every read here takes regular files only (lstat first, then
open with O_NOFOLLOW | O_NONBLOCK and fstat again), never leaves the folder,
and stops at MAX_FILES files, MAX_FILE_BYTES per file, MAX_TOTAL_BYTES in
all and MAX_SECONDS; what it skipped it says.

The static check reads the dynamic symbol imports of each compiled
extension (ELF, with pyelftools) and names the ones the rules forbid:
BLAS and LAPACK routines (linking a vendor library), the loader's own
lookups (dlopen, dlsym: reaching such a library at run time), and ptrace,
mprotect and process_vm_* (reaching into other processes or rewriting code).
It cannot see a routine pasted into the submission's own source (docs/security.md).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import time

MAX_FILES = 5000
MAX_FILE_BYTES = 64 << 20
MAX_TOTAL_BYTES = 512 << 20
MAX_SECONDS = 30.0
CODE_SUFFIXES = (".py", ".pyx", ".pxd", ".h", ".c", ".so", ".pyd", ".toml")
EXTENSION_SUFFIXES = (".so", ".pyd")

#: imported symbols a submission's compiled code may not use, as (pattern, why).
FORBIDDEN_IMPORTS = (
    (re.compile(r"cblas_|^(?:scipy_)?[sdcz](?:gemm|gemv|symm|hemm|syrk|herk|trmm|trsm|dot|axpy|"
                r"ger|gesv|getrf|getrs|gesdd|gesvd|geev|potrf|geqrf|gels|syev|heev)",
                re.IGNORECASE), "BLAS/LAPACK"),
    (re.compile(r"^(?:dlopen|dlmopen|dlsym|dlvsym)$"), "run-time library loading"),
    (re.compile(r"^(?:ptrace|process_vm_readv|process_vm_writev)$"), "access to other processes"),
    (re.compile(r"^(?:mprotect|pkey_mprotect)$"), "changing memory protection"),
)


class _Budget:
    def __init__(self):
        self.files, self.bytes, self.deadline = 0, 0, time.monotonic() + MAX_SECONDS
        self.skipped: list[str] = []

    def exhausted(self) -> bool:
        return (self.files >= MAX_FILES or self.bytes >= MAX_TOTAL_BYTES
                or time.monotonic() > self.deadline)


def _regular_files(location: str, suffixes, budget: _Budget):
    """(relative path, bytes) of the regular files under `location` ending in `suffixes`."""
    for root, dirs, files in os.walk(location, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__"
                         and not os.path.islink(os.path.join(root, d)))
        for name in sorted(files):
            if not name.endswith(suffixes):
                continue
            if budget.exhausted():
                budget.skipped.append("the rest (file, size or time limit reached)")
                return
            path = os.path.join(root, name)
            relative = os.path.relpath(path, location)
            data = _read_regular(path, budget)
            if data is None:
                budget.skipped.append(relative)
                continue
            budget.files += 1
            budget.bytes += len(data)
            yield relative, data


def _read_regular(path: str, budget: _Budget) -> bytes | None:
    """The bytes of `path` if it is a regular file within the limits, else None."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        allowed = min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - budget.bytes)
        if not stat.S_ISREG(info.st_mode) or info.st_size > allowed:
            return None
        chunks, size = [], 0
        while size <= info.st_size:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return None if size > allowed else b"".join(chunks)
    finally:
        os.close(fd)


def files_hash(location: str | None) -> str | None:
    """sha256 over the code files under a backend's folder (what produced its row).

    Files the bounded walk skipped (not regular, too large, beyond the limits)
    are named in the digest's input, so two folders differing there differ.
    """
    if not location or not os.path.isdir(location):
        return None
    digest, budget = hashlib.sha256(), _Budget()
    for relative, data in _regular_files(location, CODE_SUFFIXES, budget):
        digest.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
    for skipped in budget.skipped:
        digest.update(b"skipped\0" + skipped.encode() + b"\0")
    return digest.hexdigest()


def _imported_symbols(data: bytes) -> list[str]:
    """Undefined dynamic symbols of an ELF file (what it imports); [] for anything else."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection
    try:
        elf = ELFFile(io.BytesIO(data))
        table = elf.get_section_by_name(".dynsym")
        if not isinstance(table, SymbolTableSection):
            return []
        return [symbol.name for symbol in table.iter_symbols()
                if symbol.name and symbol["st_shndx"] == "SHN_UNDEF"]
    except (ELFError, ValueError, KeyError, AttributeError, TypeError):
        return []


def forbidden_imports(location: str | None) -> list[str]:
    """One line per compiled extension importing what the rules forbid: 'file: sym (why), ...'."""
    if not location or not os.path.isdir(location):
        return []
    found, budget = [], _Budget()
    for relative, data in _regular_files(location, EXTENSION_SUFFIXES, budget):
        if not data.startswith(b"\x7fELF"):
            continue
        bad = []
        for symbol in _imported_symbols(data):
            name = symbol.split("@")[0]
            why = next((why for pattern, why in FORBIDDEN_IMPORTS if pattern.search(name)), None)
            if why:
                bad.append(f"{name} ({why})")
        if bad:
            found.append(f"{relative}: {', '.join(sorted(set(bad))[:8])}")
    return found
