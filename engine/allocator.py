"""The C allocator and the large temporaries of full passes (glibc; elsewhere nothing changes).

A full pass over a 512-token segment holds temporaries of 10-13 MB each (codebook distances,
attention scores). glibc maps blocks that large afresh, and hands the top of its heap back to
the kernel once more than a threshold of it is free; in a process that mixes passes of
different shapes (a daemon: edits, full passes of new paragraphs, compaction) that happens
again and again, and every 4 KiB touched again is a page fault. Measured on this project's
2-core VM (the shipped student, 1 thread, rounds of a 512-token segment build and a dense
forward): 8,600-30,700 page faults per round with glibc's defaults, none after
`keep_freed_memory`; a 510-token segment build took 216 ms instead of 252-293 ms.
"""

import ctypes
import gc

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to this come from the heap
TRIM_THRESHOLD = 128 << 20  # free memory the heap keeps for reuse; 64 MB sufficed in the rounds


def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)  # the C library this process already uses
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory() -> bool:
    """Serve blocks up to 32 MB from the heap, and keep up to 128 MB of it free for reuse.

    Process-wide; every model load calls it (idempotent). False where this is not glibc.
    """
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                                     and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def settle_loaded_objects() -> None:
    """Move every Python object alive now out of reach of the cyclic garbage collector.

    After a model loads, its hundreds of thousands of objects (torch modules, tokenizer,
    transformers' configs) are walked by every full collection, which the small allocations of
    an edit trigger again and again: 8-13% of a steady stream of edits' time went to
    `gc_collect_main` (perf, the shipped student, 1 thread). They live as long as the model.
    """
    gc.collect()
    gc.freeze()


def release_freed_memory() -> None:
    """Give every free page of the heap back to the kernel after dropping a model (whose
    objects `settle_loaded_objects` froze, so they are collected again first)."""
    gc.unfreeze()
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Give every free page of the heap back to the kernel, keeping the model's objects frozen:
    after a document's states were dropped (the heap keeps freed memory for reuse otherwise,
    1 GB and more after a big document closed)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
