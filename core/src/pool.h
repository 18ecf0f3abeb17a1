// The one thread pool: xadapt runs OpenBLAS single-threaded and parallelises everything itself
// (GEMMs split into row or column blocks, attention over heads, element-wise ops over rows), so
// two pools never spin against each other on the same cores.
#ifndef XADAPT_POOL_H
#define XADAPT_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// fn(arg, begin, end) over [0, n) split into contiguous chunks, one per thread; returns when all
// chunks are done. Runs inline when n is small, there is one thread, or the caller is already
// inside a parallel region. `grain` is the smallest chunk worth a thread.
typedef void (*xa_range_fn)(void *arg, int64_t begin, int64_t end);
void xa_parallel_for(int64_t n, int64_t grain, xa_range_fn fn, void *arg);

// Threads the pool uses (>= 1), and whether the caller runs inside a parallel region.
int xa_pool_threads(void);
bool xa_pool_inside(void);
// A per-thread scratch buffer of at least `bytes`, kept and reused (memory touched again after
// being freed costs page faults); valid until the next call on the same thread. NULL on failure.
void *xa_thread_scratch(size_t bytes);

// Resize (called by xa_set_threads); n >= 1, at most XA_POOL_MAX_THREADS are started.
void xa_pool_resize(int n);
#define XA_POOL_MAX_THREADS 64
// XADAPT_THREADS when it is a positive number (at most XA_POOL_MAX_THREADS), else the online
// cores. A value that is not usable is reported once on stderr, not silently ignored.
int xa_pool_default_threads(void);

#endif
