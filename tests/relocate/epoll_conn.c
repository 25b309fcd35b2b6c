/* A connection object whose address the kernel keeps (epoll_event.data.ptr), as
 * servers do.  The relocator must pin it (the kernel's copy cannot be rewritten).
 * Prints "ready CONN", waits for stdin to close, then makes its pipe readable and
 * prints "ok" if epoll hands back the object the program holds, "stale" if not. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

struct conn { struct conn *self; long magic; char buf[40]; };
struct conn *g_conn;

int main(void) {
    int p[2], ep = epoll_create1(0);
    if (ep < 0 || pipe(p) < 0)
        return 3;
    g_conn = malloc(sizeof *g_conn);
    g_conn->self = g_conn;
    g_conn->magic = 0x5eed;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = g_conn};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) < 0)
        return 3;
    printf("ready %p\n", (void *)g_conn);
    fflush(stdout);
    while (getchar() != EOF)
        ;
    if (write(p[1], "x", 1) != 1)
        return 3;
    struct epoll_event got;
    if (epoll_wait(ep, &got, 1, 1000) != 1)
        return 4;
    struct conn *c = got.data.ptr;
    puts(c == g_conn && c->magic == 0x5eed && c->self == c ? "ok" : "stale");
    return 0;
}
