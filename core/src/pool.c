// A small fork-join pool: the calling thread runs chunk 0, workers run the rest. Workers spin
// briefly on a generation counter before sleeping on a condition variable, because steps issue
// thousands of short parallel regions and a sleeping wake-up costs more than the work.
// The team changes (first start, xa_pool_resize) only under the region lock, so no region runs
// while it does and two user threads cannot start it twice.
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN 200000

static struct {
    pthread_mutex_t mu, region; // region: one parallel region at a time across user threads
    pthread_cond_t wake, done;
    atomic_int nthreads; // including the caller
    int nworkers;  // started worker threads
    pthread_t tid[XA_POOL_MAX_THREADS];
    // gen when worker i+1 started: regions before it are not its own
    uint64_t born[XA_POOL_MAX_THREADS];
    atomic_uint_fast64_t gen; // bumped per parallel region
    atomic_int pending;       // chunks not yet finished
    xa_range_fn fn;
    void *arg;
    int64_t n, chunks;
    atomic_bool ready; // the team has been started
} P = {.mu = PTHREAD_MUTEX_INITIALIZER, .region = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
       .done = PTHREAD_COND_INITIALIZER};

static _Thread_local bool inside;

static void run_chunk(int64_t c) {
    int64_t per = P.n / P.chunks, extra = P.n % P.chunks;
    int64_t begin = c * per + (c < extra ? c : extra);
    int64_t end = begin + per + (c < extra);
    P.fn(P.arg, begin, end);
}

static void *worker(void *p) {
    int64_t id = (int64_t)(intptr_t)p; // 1..nthreads-1
    uint64_t seen = P.born[id - 1];
    inside = true;
    for (;;) {
        uint64_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen && spins < SPIN)
            spins++;
        if (g == seen) {
            pthread_mutex_lock(&P.mu);
            while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&P.wake, &P.mu);
            pthread_mutex_unlock(&P.mu);
        }
        seen = g;
        if (id < P.chunks)
            run_chunk(id);
        if (atomic_fetch_sub_explicit(&P.pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&P.mu);
            pthread_cond_signal(&P.done);
            pthread_mutex_unlock(&P.mu);
        }
    }
    return NULL;
}

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static int env_threads; // XADAPT_THREADS read once: 0 when unset or not usable

static void read_env_threads(void) {
    const char *env = getenv("XADAPT_THREADS");
    if (!env || !*env)
        return;
    char *end;
    long n = strtol(env, &end, 10);
    if (*end || n < 1) {
        fprintf(stderr, "xadapt: XADAPT_THREADS='%s' is not a positive number; using all cores\n",
                env);
        return;
    }
    if (n > XA_POOL_MAX_THREADS)
        fprintf(stderr, "xadapt: XADAPT_THREADS=%ld: using at most %d threads\n", n,
                XA_POOL_MAX_THREADS);
    env_threads = n > XA_POOL_MAX_THREADS ? XA_POOL_MAX_THREADS : (int)n;
}

int xa_pool_default_threads(void) {
    pthread_once(&env_once, read_env_threads);
    if (env_threads > 0)
        return env_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > XA_POOL_MAX_THREADS ? XA_POOL_MAX_THREADS : (int)n;
}

// Caller holds P.region.
static void ensure_workers(int n) {
    if (n > XA_POOL_MAX_THREADS)
        n = XA_POOL_MAX_THREADS;
    while (P.nworkers < n - 1) {
        P.born[P.nworkers] = atomic_load_explicit(&P.gen, memory_order_relaxed);
        if (pthread_create(&P.tid[P.nworkers], NULL, worker, (void *)(intptr_t)(P.nworkers + 1)))
            break; // fewer threads than asked: keep what we have
        pthread_detach(P.tid[P.nworkers]);
        P.nworkers++;
    }
    P.nthreads = P.nworkers + 1 < n ? P.nworkers + 1 : n;
}

static void init_once(void) {
    if (atomic_load_explicit(&P.ready, memory_order_acquire))
        return;
    pthread_mutex_lock(&P.region);
    if (!atomic_load_explicit(&P.ready, memory_order_relaxed)) {
        ensure_workers(xa_pool_default_threads());
        atomic_store_explicit(&P.ready, true, memory_order_release);
    }
    pthread_mutex_unlock(&P.region);
}

int xa_pool_threads(void) {
    init_once();
    return P.nthreads;
}

bool xa_pool_inside(void) { return inside; }

void xa_pool_resize(int n) {
    if (inside) // the team cannot change under one of its own regions
        return;
    pthread_mutex_lock(&P.region);
    ensure_workers(n < 1 ? 1 : n);
    atomic_store_explicit(&P.ready, true, memory_order_release);
    pthread_mutex_unlock(&P.region);
}

void xa_parallel_for(int64_t n, int64_t grain, xa_range_fn fn, void *arg) {
    if (n <= 0)
        return;
    init_once();
    int64_t chunks = grain > 0 ? n / grain : n;
    if (chunks <= 1 || inside || pthread_mutex_trylock(&P.region) != 0) {
        fn(arg, 0, n); // small, nested, or another user thread holds the pool: run here
        return;
    }
    if (chunks > P.nthreads)
        chunks = P.nthreads;
    if (chunks <= 1) {
        pthread_mutex_unlock(&P.region);
        fn(arg, 0, n);
        return;
    }
    // Only the workers with an id < chunks do work; every worker still acknowledges the region.
    P.fn = fn, P.arg = arg, P.n = n, P.chunks = chunks;
    atomic_store_explicit(&P.pending, P.nworkers, memory_order_relaxed);
    pthread_mutex_lock(&P.mu);
    atomic_fetch_add_explicit(&P.gen, 1, memory_order_release);
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    inside = true;
    run_chunk(0);
    inside = false;
    int spins = 0;
    while (atomic_load_explicit(&P.pending, memory_order_acquire) > 0 && spins < SPIN)
        spins++;
    if (atomic_load_explicit(&P.pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&P.mu);
        while (atomic_load_explicit(&P.pending, memory_order_acquire) > 0)
            pthread_cond_wait(&P.done, &P.mu);
        pthread_mutex_unlock(&P.mu);
    }
    pthread_mutex_unlock(&P.region);
}

void *xa_thread_scratch(size_t bytes) {
    static _Thread_local void *buf;
    static _Thread_local size_t cap;
    if (bytes > cap) {
        void *nb = NULL;
        size_t want = bytes + bytes / 2;
        if (posix_memalign(&nb, 64, want) != 0)
            return NULL;
        free(buf);
        buf = nb, cap = want;
    }
    return buf;
}
