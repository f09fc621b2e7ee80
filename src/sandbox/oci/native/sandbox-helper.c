/*
 * deltaci sandbox helper, built once per content hash (see native-tools.ts).
 *   init                      pid 1 of a job container: reaps orphans, ignores signals.
 *   step [-C DIR] CMD ARGS... runs one step in DIR (created if missing): reports "pid N" then "exit N" / "signal N" on fd 3,
 *                             runs CMD in its own session with default signal dispositions.
 *   unshare-cgroup2 DIR CMD.. host side: private mount namespace without the cgroup2 mount at DIR
 *                             (hybrid hosts, where crun 1.8 refuses to run), then exec CMD.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noreturn)) static void run_init(void) {
  /* crun run -d hands us its stdio: let go of it so the caller's pipes close. */
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); if (null > 2) close(null); }
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    int sig = 0;
    sigwait(&all, &sig);
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
  }
}

static void report(const char *fmt, int value) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, fmt, value);
  if (n > 0) { ssize_t w = write(3, buf, (size_t)n); (void)w; }
}

static int mkdir_p(const char *dir) {
  char buf[4096];
  if (strlen(dir) >= sizeof buf) return -1;
  strcpy(buf, dir);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int run_step(char **argv) {
  if (argv[0] && strcmp(argv[0], "-C") == 0 && argv[1]) {
    if (mkdir_p(argv[1]) != 0 || chdir(argv[1]) != 0) {
      fprintf(stderr, "deltaci: cannot enter working directory %s: %s\n", argv[1], strerror(errno));
      return 125;
    }
    argv += 2;
  }
  if (!argv[0]) return 2;
  int have_fd3 = fcntl(3, F_GETFD) != -1;
  if (have_fd3) fcntl(3, F_SETFD, FD_CLOEXEC);
  int ignored[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE};
  for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) signal(ignored[i], SIG_IGN);
  if (have_fd3) report("pid %d\n", (int)getpid());
  pid_t child = fork();
  if (child < 0) { perror("deltaci: fork"); return 125; }
  if (child == 0) {
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) signal(ignored[i], SIG_DFL);
    setsid();
    execvp(argv[0], argv);
    fprintf(stderr, "deltaci: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
  if (WIFSIGNALED(status)) {
    if (have_fd3) report("signal %d\n", WTERMSIG(status));
    return 128 + WTERMSIG(status);
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 125;
  if (have_fd3) report("exit %d\n", code);
  return code;
}

static int run_unshare(char *dir, char **argv) {
  if (unshare(CLONE_NEWNS) != 0) { perror("deltaci: unshare"); return 125; }
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) { perror("deltaci: make-private"); return 125; }
  if (umount2(dir, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) { perror("deltaci: umount"); return 125; }
  execvp(argv[0], argv);
  fprintf(stderr, "deltaci: cannot run %s: %s\n", argv[0], strerror(errno));
  return 127;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "init") == 0) run_init();
  if (argc >= 3 && strcmp(argv[1], "step") == 0) return run_step(argv + 2);
  if (argc >= 4 && strcmp(argv[1], "unshare-cgroup2") == 0) return run_unshare(argv[2], argv + 3);
  fprintf(stderr, "usage: %s init | step CMD... | unshare-cgroup2 DIR CMD...\n", argv[0]);
  return 2;
}
