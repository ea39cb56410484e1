/* Four threads: atomic counting, a mutex-protected sum, and join results. */
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
static atomic_long counter;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static long shared;
void *work(void *arg) {
    long id = (long)arg;
    for (int i = 0; i < 100000; i++) atomic_fetch_add(&counter, 1);
    for (int i = 0; i < 200; i++) { pthread_mutex_lock(&m); shared += id; pthread_mutex_unlock(&m); }
    return (void *)(id * 10);
}
int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, work, (void *)i);
    long sum = 0;
    for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); sum += (long)r; }
    printf("counter %ld shared %ld joined %ld\n", (long)counter, shared, sum);
    return 0;
}
