"""Memory system calls: mmap, munmap, mprotect, brk, madvise, mremap."""

from __future__ import annotations

import errno
import logging
import stat as statmod

from osv.mm import (
    HUGE_SIZE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    USER_END,
    MappingDenied,
    MemoryFault,
    OutOfMemoryError,
    page_align_up,
)
from osv.syscalls._common import SyscallError, s32
from osv.syscalls._numbers import NUMBERS

logger = logging.getLogger(__name__)

MAP_TYPE = 0x0F
MADV_DONTNEED = 4
MADV_FREE = 8
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2


def _check_range(address: int, length: int) -> None:
    if address & (PAGE_SIZE - 1) or length == 0 or address + length > USER_END:
        raise SyscallError(errno.EINVAL)


def _map_area(mm, start: int, length: int, prot: int, flags: int, **attrs):  # noqa: ANN001, ANN003, ANN202
    """map_area, with guest memory running out answered as ENOMEM."""
    try:
        return mm.map_area(start, length, prot, flags, **attrs)
    except OutOfMemoryError:
        raise SyscallError(errno.ENOMEM) from None


def sys_mmap(t, addr, length, prot, flags, fd, offset):  # noqa: ANN001
    flags = s32(flags)
    prot = s32(prot)
    if length == 0 or prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
        raise SyscallError(errno.EINVAL)
    if flags & MAP_TYPE not in (MAP_PRIVATE, MAP_SHARED):
        raise SyscallError(errno.EINVAL)
    if offset & (PAGE_SIZE - 1):
        raise SyscallError(errno.EINVAL)
    length = page_align_up(length)
    if length > USER_END:
        raise SyscallError(errno.ENOMEM)
    mm = t.mm

    source = None
    lender = None
    runs = None
    in_file = length
    if not flags & MAP_ANONYMOUS:
        source = t.fds.get(s32(fd))
        shared = flags & MAP_TYPE == MAP_SHARED
        # As Linux: a file is mapped only through a descriptor that can read
        # it, and shared writable only through one that can also write it.
        if not getattr(source, "readable", False):
            raise SyscallError(errno.EACCES)
        writable = getattr(source, "writable", False)
        if shared and prot & PROT_WRITE and not writable:
            raise SyscallError(errno.EACCES)
        st = source.fstat()
        name = t.vfs.fd_target(source)
        # Whole pages past the end of a regular file are mapped but hold
        # nothing: touching them raises SIGBUS, as on Linux.
        if statmod.S_ISREG(st.st_mode):
            in_file = min(length, page_align_up(max(st.st_size - offset, 0)))
        # A file system that keeps the file in guest frames and follows who
        # maps them (ramfs) lends the frames: a shared mapping is then the
        # file itself, and a private one shares them until written.
        lend = getattr(source.vnode, "lend_frames", None)
        if lend is not None and (shared or not prot & PROT_WRITE):
            runs = lend(offset, in_file, shared)
            if runs is not None:
                lender = source.vnode
        if shared and prot & PROT_WRITE and lender is None:
            # Elsewhere the mapping and the file could not stay one (nor be
            # written back on msync and munmap): refused, not faked.
            logger.warning(
                "mmap: writable shared mappings of %s are not supported: ENODEV",
                name,
            )
            raise SyscallError(errno.ENODEV, "writable MAP_SHARED file mapping")
        # Linux's VM_MAYWRITE: mprotect may add PROT_WRITE to this mapping.
        may_write = shared and writable and lender is not None

    # Choose the address: MAP_FIXED replaces, a free hint is honoured, otherwise
    # the highest free gap below the mmap base, as Linux does.
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        _check_range(addr, length)
        if flags & MAP_FIXED_NOREPLACE and mm._overlapping(addr, addr + length):
            raise SyscallError(errno.EEXIST)
        if source is not None and in_file == length and not shared:
            token = None if lender is not None else source.vnode.content_token()
            if mm.remap_file(addr, length, prot, offset, name, token, lender):
                return addr
        mm.unmap(addr, length)
        start = addr
    else:
        start = 0
        if addr and not addr & (PAGE_SIZE - 1) and addr + length <= USER_END:
            if not mm._overlapping(addr, addr + length):
                start = addr
        if not start:
            # A file mapping keeps the file offset's place within 2 MiB, so
            # that frames a file system caches in 2 MiB runs map whole.
            phase = offset & (HUGE_SIZE - 1) if source is not None else 0
            try:
                start = mm.free_range(length, phase=phase)
            except MemoryFault:
                raise SyscallError(errno.ENOMEM) from None

    if source is None:
        _map_area(mm, start, length, prot, flags)
        return start
    attrs = {
        "name": name,
        "device": st.st_dev,
        "inode": st.st_ino,
        "vnode": source.vnode,
    }
    if in_file < length:
        mm.map_area(
            start + in_file, length - in_file, prot, flags, offset=offset + in_file,
            beyond_eof=True, may_write=may_write, lender=lender, **attrs,
        )  # fmt: skip
    if not in_file:
        return start
    if lender is not None:
        mm.map_borrowed(
            start, runs, prot, flags, offset=offset, may_write=may_write,
            lender=lender, **attrs,
        )  # fmt: skip
        return start
    # A mapping that can never write the file shares the pages of a file
    # system that caches them in guest memory; nothing is copied.
    if flags & MAP_TYPE == MAP_SHARED or not prot & PROT_WRITE:
        runs = source.vnode.mapped_frames(offset, in_file)
        if runs:
            mapped = mm.map_borrowed(start, runs, prot, flags, offset=offset, **attrs)
            if mapped < in_file:
                # Devices and the like whose cache stops short: zeros.
                _map_area(
                    mm, start + mapped, in_file - mapped, prot, flags,
                    offset=offset + mapped, **attrs,
                )  # fmt: skip
            return start
    # A private file mapping is a copy of the file taken now, read straight
    # into the area's frames; the rest of the last page reads as zeros.
    area = _map_area(mm, start, in_file, prot, flags, offset=offset, **attrs)
    if not prot & PROT_WRITE:
        area.token = source.vnode.content_token()
    done = 0
    for view in mm.kernel_views(start, in_file):
        count = source.preadinto(view, offset + done)
        done += count
        if count < len(view):
            break
    return start


def sys_munmap(t, addr, length, *_):  # noqa: ANN001, ANN002
    _check_range(addr, page_align_up(length))
    t.mm.unmap(addr, length)
    return 0


def sys_mprotect(t, addr, length, prot, *_):  # noqa: ANN001, ANN002
    if addr & (PAGE_SIZE - 1):
        raise SyscallError(errno.EINVAL)
    if length == 0:
        return 0
    prot = s32(prot)
    # PROT_GROWSDOWN/PROT_GROWSUP (0x01000000, 0x02000000) only extend the range.
    prot &= PROT_READ | PROT_WRITE | PROT_EXEC
    try:
        t.mm.protect(addr, length, prot)
    except MemoryFault:
        raise SyscallError(errno.ENOMEM) from None
    except MappingDenied:
        raise SyscallError(errno.EACCES) from None
    return 0


def sys_pkey_mprotect(t, addr, length, prot, pkey, *_):  # noqa: ANN001, ANN002
    """mprotect with a protection key; only key -1 (none) exists here.

    The guest is given no protection keys (pkey_alloc is not offered), so
    any other key is one the program never allocated: EINVAL, as on Linux.
    """
    if s32(pkey) != -1:
        logger.info("pkey_mprotect: protection key %d was never allocated", s32(pkey))
        raise SyscallError(errno.EINVAL)
    return sys_mprotect(t, addr, length, prot)


def sys_brk(t, addr, *_):  # noqa: ANN001, ANN002
    return t.mm.set_brk(addr) if addr else t.mm.brk


def sys_madvise(t, addr, length, advice, *_):  # noqa: ANN001, ANN002
    if addr & (PAGE_SIZE - 1):
        raise SyscallError(errno.EINVAL)
    advice = s32(advice)
    if advice in (MADV_DONTNEED, MADV_FREE) and length:
        try:
            t.mm.discard(addr, length)
        except MemoryFault:
            raise SyscallError(errno.EINVAL) from None
    return 0


def sys_mremap(t, old_addr, old_size, new_size, flags, new_addr, *_):  # noqa: ANN001, ANN002
    flags = s32(flags)
    if old_addr & (PAGE_SIZE - 1) or not new_size:
        raise SyscallError(errno.EINVAL)
    old_size = page_align_up(old_size)
    new_size = page_align_up(new_size)
    mm = t.mm
    area = mm.find(old_addr)
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        raise SyscallError(errno.EINVAL)
    if area is None:
        raise SyscallError(errno.EFAULT)
    if not flags & MREMAP_FIXED and new_size <= old_size:
        # As on Linux, shrinking in place unmaps the tail whatever mappings
        # it crosses; only growing and moving need one mapping.
        if new_size < old_size:
            mm.unmap(old_addr + new_size, old_size - new_size)
        return old_addr
    if area.lender is not None:
        return _remap_lent(mm, area, old_addr, old_size, new_size, flags, new_addr)
    if old_addr + old_size > area.end:
        raise SyscallError(errno.EFAULT)
    if flags & MREMAP_FIXED:
        target = new_addr
        mm.unmap(target, new_size)
    elif not mm._overlapping(old_addr + old_size, old_addr + new_size):
        mm.map_area(
            old_addr + old_size,
            new_size - old_size,
            area.prot,
            area.flags,
            name=area.name,
            offset=area.offset + old_size,
            device=area.device,
            inode=area.inode,
        )
        return old_addr
    elif not flags & MREMAP_MAYMOVE:
        raise SyscallError(errno.ENOMEM)
    else:
        target = mm.free_range(new_size)
    # Move: a new area holding a copy of the old contents, then drop the old.
    contents = (
        mm.read(old_addr, min(old_size, new_size)) if area.prot & PROT_READ else b""
    )
    mm.map_area(
        target,
        new_size,
        area.prot,
        area.flags,
        name=area.name,
        offset=area.offset,
        device=area.device,
        inode=area.inode,
    )
    if contents:
        mm.write_kernel(target, contents)
    mm.unmap(old_addr, old_size)
    return target


def _remap_lent(mm, area, old_addr, old_size, new_size, flags, new_addr) -> int:  # noqa: ANN001
    """mremap of a mapping of a file kept in frames (see sys_mmap's lenders).

    The grown or moved mapping maps the file's frames too, so that it stays
    the file (a copy would silently stop being it); pages past the end of
    the file raise SIGBUS, as for mmap.
    """
    lender = area.lender
    # The old range must be one mapping: pieces of one file, in file order.
    delta = area.offset - area.start
    position = old_addr
    for piece in mm._overlapping(old_addr, old_addr + old_size):
        if (
            piece.start > position
            or piece.lender is not lender
            or piece.offset - piece.start != delta
        ):
            raise SyscallError(errno.EFAULT)
        position = piece.end
    if position < old_addr + old_size:
        raise SyscallError(errno.EFAULT)
    offset = old_addr + delta
    size = area.vnode.size

    def map_file(start: int, file_offset: int, length: int) -> None:
        in_file = min(length, max(page_align_up(size) - file_offset, 0))
        attrs = {
            "name": area.name,
            "device": area.device,
            "inode": area.inode,
            "vnode": area.vnode,
            "may_write": area.may_write,
            "lender": lender,
        }
        if in_file < length:
            mm.map_area(
                start + in_file, length - in_file, area.prot, area.flags,
                offset=file_offset + in_file, beyond_eof=True, **attrs,
            )  # fmt: skip
        if in_file:
            try:
                runs = lender.lender_runs(file_offset, in_file)
            except OutOfMemoryError:
                mm.unmap(start, length)
                raise SyscallError(errno.ENOMEM) from None
            mm.map_borrowed(
                start, runs, area.prot, area.flags, offset=file_offset, **attrs
            )

    if not flags & MREMAP_FIXED:
        grown = old_addr + old_size
        if not mm._overlapping(grown, old_addr + new_size):
            map_file(grown, offset + old_size, new_size - old_size)
            return old_addr
        if not flags & MREMAP_MAYMOVE:
            raise SyscallError(errno.ENOMEM)
        try:
            target = mm.free_range(new_size, phase=offset & (HUGE_SIZE - 1))
        except MemoryFault:
            raise SyscallError(errno.ENOMEM) from None
    else:
        target = new_addr
        _check_range(target, new_size)
        if target < old_addr + old_size and old_addr < target + new_size:
            raise SyscallError(errno.EINVAL)
        mm.unmap(target, new_size)
    # The new mapping first: the old one may be what keeps the file alive.
    map_file(target, offset, new_size)
    mm.unmap(old_addr, old_size)
    return target


def sys_msync(t, addr, length, flags, *_):  # noqa: ANN001, ANN002
    # Nothing to write back: a shared mapping of a file maps the frames
    # that hold the file (ramfs), or a file that never changes (ROFS).
    if addr & (PAGE_SIZE - 1):
        raise SyscallError(errno.EINVAL)
    return 0


def sys_mlock(t, *_):  # noqa: ANN001, ANN002
    # Guest memory is never swapped out by this kernel: every page is locked.
    return 0


def sys_mincore(t, addr, length, vec, *_):  # noqa: ANN001, ANN002
    """A page counts as resident once it has a frame: every page of an area
    mapped at creation, and the touched pages of a frames-on-demand area."""
    if addr & (PAGE_SIZE - 1):
        raise SyscallError(errno.EINVAL)
    mm = t.mm
    states = bytearray()
    for page in range(addr, addr + page_align_up(length), PAGE_SIZE):
        area = mm.find(page)
        if area is None or area.hidden:
            raise SyscallError(errno.ENOMEM)
        resident = area.pa >= 0 or (page >> 12) in area.pages
        states.append(1 if resident else 0)
    t.mm.write(vec, bytes(states))
    return 0


SYSCALLS = {
    NUMBERS["mmap"]: sys_mmap,
    NUMBERS["munmap"]: sys_munmap,
    NUMBERS["mprotect"]: sys_mprotect,
    NUMBERS["pkey_mprotect"]: sys_pkey_mprotect,
    NUMBERS["brk"]: sys_brk,
    NUMBERS["madvise"]: sys_madvise,
    NUMBERS["mremap"]: sys_mremap,
    NUMBERS["msync"]: sys_msync,
    NUMBERS["mlock"]: sys_mlock,
    NUMBERS["munlock"]: sys_mlock,
    NUMBERS["mlockall"]: sys_mlock,
    NUMBERS["munlockall"]: sys_mlock,
    NUMBERS["mincore"]: sys_mincore,
}
