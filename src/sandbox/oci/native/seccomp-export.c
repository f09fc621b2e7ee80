/*
 * Compiles a seccomp rule list (stdin, one item per line) to raw BPF (stdout) with libseccomp,
 * so crun can load it as-is (annotation run.oci.seccomp_bpf_data) instead of compiling per start.
 *   default ACTION ERRNO
 *   arch NAME                                  (libseccomp arch token, e.g. x86_64, x86, x32)
 *   rule ACTION ERRNO SYSCALL NARGS [INDEX OP VALUE VALUE2]...
 * ACTION: allow errno kill_process kill_thread trap log; OP: ne lt le eq ge gt masked_eq.
 */
#include <errno.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int action(const char *name, unsigned int err, uint32_t *out) {
  if (!strcmp(name, "allow")) *out = SCMP_ACT_ALLOW;
  else if (!strcmp(name, "errno")) *out = SCMP_ACT_ERRNO(err);
  else if (!strcmp(name, "kill_process")) *out = SCMP_ACT_KILL_PROCESS;
  else if (!strcmp(name, "kill_thread")) *out = SCMP_ACT_KILL_THREAD;
  else if (!strcmp(name, "trap")) *out = SCMP_ACT_TRAP;
  else if (!strcmp(name, "log")) *out = SCMP_ACT_LOG;
  else return -1;
  return 0;
}

static int op(const char *name, enum scmp_compare *out) {
  static const struct { const char *n; enum scmp_compare c; } ops[] = {
    {"ne", SCMP_CMP_NE}, {"lt", SCMP_CMP_LT}, {"le", SCMP_CMP_LE}, {"eq", SCMP_CMP_EQ},
    {"ge", SCMP_CMP_GE}, {"gt", SCMP_CMP_GT}, {"masked_eq", SCMP_CMP_MASKED_EQ}};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) if (!strcmp(name, ops[i].n)) { *out = ops[i].c; return 0; }
  return -1;
}

int main(void) {
  char line[8192];
  scmp_filter_ctx ctx = NULL;
  int lineno = 0;
  while (fgets(line, sizeof line, stdin)) {
    lineno++;
    char *save = NULL, *kw = strtok_r(line, " \t\n", &save);
    if (!kw) continue;
    if (!strcmp(kw, "default")) {
      char *a = strtok_r(NULL, " \t\n", &save), *e = strtok_r(NULL, " \t\n", &save);
      uint32_t act;
      if (!a || !e || action(a, (unsigned)atoi(e), &act)) { fprintf(stderr, "line %d: bad default\n", lineno); return 2; }
      ctx = seccomp_init(act);
      if (!ctx) { fprintf(stderr, "seccomp_init failed\n"); return 1; }
    } else if (!strcmp(kw, "arch") && ctx) {
      char *a = strtok_r(NULL, " \t\n", &save);
      uint32_t arch = a ? seccomp_arch_resolve_name(a) : 0;
      if (!arch) { fprintf(stderr, "line %d: unknown arch\n", lineno); return 2; }
      int rc = seccomp_arch_add(ctx, arch);
      if (rc && rc != -EEXIST) { fprintf(stderr, "line %d: arch_add: %s\n", lineno, strerror(-rc)); return 1; }
    } else if (!strcmp(kw, "rule") && ctx) {
      char *a = strtok_r(NULL, " \t\n", &save), *e = strtok_r(NULL, " \t\n", &save);
      char *sys = strtok_r(NULL, " \t\n", &save), *na = strtok_r(NULL, " \t\n", &save);
      uint32_t act;
      if (!a || !e || !sys || !na || action(a, (unsigned)atoi(e), &act)) { fprintf(stderr, "line %d: bad rule\n", lineno); return 2; }
      int nr = seccomp_syscall_resolve_name(sys);
      if (nr == __NR_SCMP_ERROR) continue; /* unknown on this libseccomp: skip like crun does */
      unsigned n = (unsigned)atoi(na);
      struct scmp_arg_cmp args[6];
      if (n > 6) { fprintf(stderr, "line %d: too many args\n", lineno); return 2; }
      for (unsigned i = 0; i < n; i++) {
        char *idx = strtok_r(NULL, " \t\n", &save), *o = strtok_r(NULL, " \t\n", &save);
        char *v1 = strtok_r(NULL, " \t\n", &save), *v2 = strtok_r(NULL, " \t\n", &save);
        enum scmp_compare c;
        if (!idx || !o || !v1 || !v2 || op(o, &c)) { fprintf(stderr, "line %d: bad arg\n", lineno); return 2; }
        args[i] = (struct scmp_arg_cmp){(unsigned)atoi(idx), c, strtoull(v1, NULL, 0), strtoull(v2, NULL, 0)};
      }
      int rc = seccomp_rule_add_array(ctx, act, nr, n, args);
      if (rc == -EACCES) continue; /* same action as the default: nothing to add */
      if (rc) { fprintf(stderr, "line %d: rule_add %s: %s\n", lineno, sys, strerror(-rc)); return 1; }
    } else {
      fprintf(stderr, "line %d: unexpected '%s'\n", lineno, kw);
      return 2;
    }
  }
  if (!ctx) { fprintf(stderr, "no default action\n"); return 2; }
  int rc = seccomp_export_bpf(ctx, STDOUT_FILENO);
  seccomp_release(ctx);
  if (rc) { fprintf(stderr, "export: %s\n", strerror(-rc)); return 1; }
  return 0;
}
