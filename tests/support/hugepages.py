"""Huge pages of tmpfs files, as the fetch's sink makes them (preload/src/engine/sink_map.c):
whether the kernel allows them (MADV_COLLAPSE on a tmpfs file, Linux 6.1), and how many of a
file's pages sit in huge pages or in physically contiguous runs (/proc/self/pagemap and
/proc/kpageflags, root only). scripts/probe_page_copy.py uses it too."""

import array
import ctypes
import mmap
import os

HUGE = 2 << 20
MADV_COLLAPSE, MAP_FIXED = 25, 0x10  # Linux 6.1; not in Python 3.11's mmap module
FALLOC_FL_KEEP_SIZE = 1
KPF_THP = 1 << 22
PFN_MASK, PRESENT = (1 << 55) - 1, 1 << 63

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def map_aligned(fd: int, size: int) -> tuple:
    """Maps [0, size) of fd shared and writable at a 2 MiB-aligned address, where its 2 MiB
    ranges can be made huge pages. (area, address): munmap(area, size + HUGE) ends it."""
    area = libc.mmap(None, size + HUGE, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if area in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    at = (area + HUGE - 1) // HUGE * HUGE
    if libc.mmap(at, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | MAP_FIXED, fd,
                 0) != at:
        e = ctypes.get_errno()
        libc.munmap(area, size + HUGE)
        raise OSError(e, "mmap")
    return area, at


def make_huge(fd: int, at: int, size: int) -> int:
    """Makes each whole 2 MiB of the mapping at `at` one huge page (one page of each present
    first; the rest is zeros): 0, or the errno of MADV_COLLAPSE."""
    whole = size - size % HUGE
    for o in range(0, whole, HUGE):
        libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, o, mmap.PAGESIZE)
    return 0 if libc.madvise(at, whole, MADV_COLLAPSE) == 0 else ctypes.get_errno()


def tmpfs_gives_huge_pages(directory: str = "/dev/shm") -> bool:
    """Whether one 2 MiB of a new tmpfs file there can be made a huge page, and the pages seen
    (root)."""
    if os.geteuid() != 0 or not os.access("/proc/kpageflags", os.R_OK):
        return False
    path = os.path.join(directory, f"ossc-test-huge-probe-{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.unlink(path)
        os.ftruncate(fd, HUGE)
        area, at = map_aligned(fd, HUGE)
        try:
            return make_huge(fd, at, HUGE) == 0
        finally:
            libc.munmap(area, 2 * HUGE)
    finally:
        os.close(fd)


def page_frames(path: str) -> tuple:
    """(the page frame numbers of the file's pages in memory, in file order; its pages)."""
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    # libc's mmap: Python's hides the address of a read-only mapping
    p = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED | mmap.MAP_POPULATE, fd, 0)
    os.close(fd)
    n = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as pm:
            pm.seek(p // mmap.PAGESIZE * 8)
            entries = array.array("Q", pm.read(n * 8))
    finally:
        libc.munmap(p, size)
    return [e & PFN_MASK for e in entries if e & PRESENT], n


def pages_in_huge_pages(path: str) -> tuple:
    """(pages of the file that are parts of huge pages, pages of the file)."""
    pfns, n = page_frames(path)
    assert len(pfns) == n, "a page of the file is not in memory"
    huge = 0
    with open("/proc/kpageflags", "rb", buffering=0) as kf:
        for pfn in pfns:
            kf.seek(pfn * 8)
            huge += bool(array.array("Q", kf.read(8))[0] & KPF_THP)
    return huge, n
