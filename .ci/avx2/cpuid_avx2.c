/* Loaded by .ci/avx2/run (LD_PRELOAD): the process sees the CPU as one without AVX-512, AMX or
 * AVX-VNNI. CPUID faulting (arch_prctl ARCH_SET_CPUID, the cpuid_fault flag) turns every cpuid
 * instruction into SIGSEGV; the handler runs the real cpuid with faulting briefly off, clears
 * those feature bits and steps over the instruction. Faulting is kept by fork and threads and
 * reset by execve, where LD_PRELOAD sets it again.
 *
 * sigaction and signal are wrapped for SIGSEGV only: a program's own handler (Python's
 * faulthandler, which pytest turns on) is recorded and called for every other SIGSEGV instead of
 * replacing this one, which cpuid needs for the life of the process. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static sigaction_fn real_sigaction;
static struct sigaction program_segv; /* what the program asked for */

static void mask(unsigned leaf, unsigned sub, unsigned *a, unsigned *b,
                 unsigned *c, unsigned *d) {
  if (leaf == 7 && sub == 0) {
    /* EBX: avx512 f dq ifma pf er cd bw vl */
    *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) |
            (1u << 28) | (1u << 30) | (1u << 31));
    /* ECX: avx512 vbmi vbmi2 vnni bitalg vpopcntdq */
    *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
    /* EDX: 4vnniw 4fmaps vp2intersect amx_bf16 avx512_fp16 amx_tile amx_int8 */
    *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) |
            (1u << 24) | (1u << 25));
  } else if (leaf == 7 && sub == 1) {
    *a &= ~((1u << 4) | (1u << 5)); /* avx_vnni avx512_bf16 */
  } else if (leaf == 0xd && sub == 0) {
    *a &= ~((7u << 5) | (3u << 17)); /* opmask/zmm and tile state */
  }
}

static void on_segv(int sig, siginfo_t *si, void *ctx) {
  ucontext_t *uc = ctx;
  greg_t *g = uc->uc_mcontext.gregs;
  const unsigned char *ip = (const unsigned char *)g[REG_RIP];
  if (si->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
    unsigned leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX];
    unsigned a, b, c, d;
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, a, b, c, d);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    mask(leaf, sub, &a, &b, &c, &d);
    g[REG_RAX] = a; g[REG_RBX] = b; g[REG_RCX] = c; g[REG_RDX] = d;
    g[REG_RIP] += 2;
    return;
  }
  if (program_segv.sa_flags & SA_SIGINFO) {
    program_segv.sa_sigaction(sig, si, ctx);
  } else if (program_segv.sa_handler != SIG_DFL &&
             program_segv.sa_handler != SIG_IGN) {
    program_segv.sa_handler(sig);
  } else {
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    real_sigaction(SIGSEGV, &dfl, NULL); /* returning re-faults: default */
  }
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
  if (sig != SIGSEGV) return real_sigaction(sig, act, old);
  if (old) *old = program_segv;
  if (act) program_segv = *act;
  return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
  struct sigaction act = {.sa_handler = handler, .sa_flags = SA_RESTART}, old;
  if (sigaction(sig, &act, &old) < 0) return SIG_ERR;
  return old.sa_handler;
}

__attribute__((constructor)) static void start(void) {
  real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
  struct sigaction act = {.sa_sigaction = on_segv,
                          .sa_flags = SA_SIGINFO | SA_RESTART};
  sigemptyset(&act.sa_mask);
  real_sigaction(SIGSEGV, &act, NULL);
  if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
    perror("cpuid_avx2: arch_prctl(ARCH_SET_CPUID) (no cpuid_fault?)");
    abort();
  }
}
