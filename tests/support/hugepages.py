"""Whether tmpfs pages are huge: what the kernel allows (MADV_COLLAPSE on a tmpfs file, Linux
6.1) and how many of a file's pages sit in huge pages (/proc/self/pagemap and /proc/kpageflags,
root only)."""

import array
import ctypes
import mmap
import os

HUGE = 2 << 20
MADV_COLLAPSE, MAP_FIXED = 25, 0x10
KPF_THP = 1 << 22
PFN_MASK, PRESENT = (1 << 55) - 1, 1 << 63

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def tmpfs_gives_huge_pages(directory: str = "/dev/shm") -> bool:
    """Whether one 2 MiB of a new tmpfs file there can be made a huge page, as ossc's sink does
    (sink_map.c), and the pages seen (root)."""
    if os.geteuid() != 0 or not os.access("/proc/kpageflags", os.R_OK):
        return False
    path = os.path.join(directory, f"ossc-test-huge-probe-{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    area = None
    try:
        os.unlink(path)
        os.ftruncate(fd, HUGE)
        area = libc.mmap(None, 2 * HUGE, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        at = (area + HUGE - 1) // HUGE * HUGE
        if libc.mmap(at, HUGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | MAP_FIXED, fd,
                     0) != at:
            return False
        libc.fallocate(fd, 1, 0, mmap.PAGESIZE)
        return libc.madvise(at, HUGE, MADV_COLLAPSE) == 0
    finally:
        if area:
            libc.munmap(area, 2 * HUGE)
        os.close(fd)


def pages_in_huge_pages(path: str) -> tuple:
    """(pages of the file that are parts of huge pages, pages of the file)."""
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    p = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED | mmap.MAP_POPULATE, fd, 0)
    os.close(fd)
    n = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as pm:
            pm.seek(p // mmap.PAGESIZE * 8)
            entries = array.array("Q", pm.read(n * 8))
    finally:
        libc.munmap(p, size)
    huge = 0
    with open("/proc/kpageflags", "rb", buffering=0) as kf:
        for e in entries:
            assert e & PRESENT, "a page of the file is not in memory"
            kf.seek((e & PFN_MASK) * 8)
            huge += bool(array.array("Q", kf.read(8))[0] & KPF_THP)
    return huge, n
