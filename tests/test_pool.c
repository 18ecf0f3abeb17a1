// The thread pool: every index of a range runs exactly once, across resizes that grow and
// shrink the team after regions have run, and from several user threads starting it at once;
// and how XADAPT_THREADS is read.
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"

#define N 10000

typedef struct {
    atomic_int hits[N];
} counts;

static void count_range(void *arg, int64_t begin, int64_t end) {
    counts *c = arg;
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
}

static void expect_each_once(counts *c, int rounds) {
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&c->hits[i]), rounds, "index %d ran %d times, not %d", i,
                     atomic_load(&c->hits[i]), rounds);
}

static void run_rounds(counts *c, int rounds) {
    for (int r = 0; r < rounds; r++)
        xa_parallel_for(N, 16, count_range, c);
}

Test(pool, growing_the_team_after_regions_ran_replays_none_of_them) {
    static counts c;
    xa_pool_resize(2); // regions with a worker, then more workers join
    run_rounds(&c, 50);
    xa_pool_resize(4);
    cr_assert_eq(xa_pool_threads(), 4);
    run_rounds(&c, 50);
    xa_pool_resize(1);
    run_rounds(&c, 50);
    expect_each_once(&c, 150);
}

static void *user_thread(void *arg) {
    run_rounds(arg, 200);
    return NULL;
}

Test(pool, user_threads_starting_and_sharing_it_at_once_run_every_index_once) {
    static counts c[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, user_thread, &c[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        expect_each_once(&c[i], 200);
}

// XADAPT_THREADS: a positive number is taken (capped), anything else falls back to the cores.
// Criterion runs each test in its own process, so each reads the variable afresh.
Test(pool, xadapt_threads_is_taken_when_it_is_a_positive_number) {
    setenv("XADAPT_THREADS", "3", 1);
    cr_expect_eq(xa_pool_default_threads(), 3);
}

Test(pool, xadapt_threads_above_the_cap_is_capped) {
    setenv("XADAPT_THREADS", "100000", 1);
    cr_expect_eq(xa_pool_default_threads(), XA_POOL_MAX_THREADS);
}

Test(pool, xadapt_threads_that_is_no_number_falls_back_to_the_cores) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    setenv("XADAPT_THREADS", "2x", 1);
    cr_expect_eq(xa_pool_default_threads(),
                 cores < XA_POOL_MAX_THREADS ? cores : XA_POOL_MAX_THREADS);
}
