/* xsave_regs.c: puts a known pattern in ymm7 (with "avx512": in zmm7 and k3),
 * prints the pattern as 64-bit hex words and "ready", then waits in pause(2)
 * forever without touching them (the load and the wait are one asm block: no
 * vzeroupper in between), so a snapshot's XSAVE area can be checked against
 * the pattern (tests/hostile/test_cores.py). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>

static uint64_t pat[8];

#define WAIT "1:\n\tmov %1, %%eax\n\tsyscall\n\tjmp 1b"

__attribute__((target("avx512f"), noreturn, noinline)) static void hold_zmm(void) {
    __asm__ volatile("vmovdqu64 %0, %%zmm7\n\tkmovw %0, %%k3\n" WAIT
                     :: "m"(pat), "i"(SYS_pause) : "rax", "rcx", "r11", "xmm7", "memory");
    __builtin_unreachable();
}

__attribute__((target("avx"), noreturn, noinline)) static void hold_ymm(void) {
    __asm__ volatile("vmovdqu %0, %%ymm7\n" WAIT
                     :: "m"(pat), "i"(SYS_pause) : "rax", "rcx", "r11", "xmm7", "memory");
    __builtin_unreachable();
}

int main(int argc, char **argv) {
    int avx512 = argc > 1 && strcmp(argv[1], "avx512") == 0;
    for (int i = 0; i < 8; i++)
        pat[i] = 0x0102030405060708ULL * (uint64_t)(i + 1) ^ 0xa5a5a5a5a5a5a5a5ULL;
    for (int i = 0; i < (avx512 ? 8 : 4); i++)
        printf("%#llx\n", (unsigned long long)pat[i]);
    printf("ready\n");
    fflush(stdout);
    if (avx512)
        hold_zmm();
    hold_ymm();
}
