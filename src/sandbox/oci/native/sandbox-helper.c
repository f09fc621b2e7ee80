/*
 * deltaci sandbox helper, built once per content hash (see native-tools.ts).
 *   init [PORT SOCKET]        pid 1 of a job container: reaps orphans, ignores signals; with PORT and
 *                             SOCKET forwards 127.0.0.1:PORT to the egress proxy's unix socket.
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Copies both ways between a and b until both directions are closed (one child per connection). */
__attribute__((noreturn)) static void relay(int a, int b) {
  char buf[65536];
  int fds[2] = {a, b}, open_[2] = {1, 1};
  while (open_[0] || open_[1]) {
    struct pollfd p[2] = {{open_[0] ? a : -1, POLLIN, 0}, {open_[1] ? b : -1, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) { if (errno == EINTR) continue; break; }
    for (int i = 0; i < 2; i++) {
      if (!open_[i] || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i], buf, sizeof buf);
      if (n <= 0) { open_[i] = 0; shutdown(fds[1 - i], SHUT_WR); continue; }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = write(fds[1 - i], buf + off, (size_t)(n - off));
        if (w <= 0) _exit(0);
        off += w;
      }
    }
  }
  _exit(0);
}

static int listen_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) return -1;
  return fd;
}

static int connect_unix(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { if (fd >= 0) close(fd); return -1; }
  return fd;
}

/* pid 1: reaps orphans; with PORT and SOCKET, forwards 127.0.0.1:PORT to the egress proxy's socket. */
__attribute__((noreturn)) static void run_init(char **argv) {
  /* crun run -d hands us its stdio: let go of it so the caller's pipes close. */
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); if (null > 2) close(null); }
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  sigprocmask(SIG_BLOCK, &all, NULL);
  int sfd = signalfd(-1, &all, SFD_CLOEXEC);
  int lfd = argv[0] && argv[1] ? listen_loopback(atoi(argv[0])) : -1;
  for (;;) {
    struct pollfd p[2] = {{sfd, POLLIN, 0}, {lfd, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) continue;
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      ssize_t r = read(sfd, &si, sizeof si);
      (void)r;
      while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
    if (lfd >= 0 && (p[1].revents & POLLIN)) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue;
      int u = connect_unix(argv[1]);
      if (u >= 0 && fork() == 0) {
        sigprocmask(SIG_SETMASK, &none, NULL);
        relay(c, u);
      }
      close(c);
      if (u >= 0) close(u);
    }
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
  if (argc >= 2 && strcmp(argv[1], "init") == 0) run_init(argv + 2);
  if (argc >= 3 && strcmp(argv[1], "step") == 0) return run_step(argv + 2);
  if (argc >= 4 && strcmp(argv[1], "unshare-cgroup2") == 0) return run_unshare(argv[2], argv + 3);
  fprintf(stderr, "usage: %s init | step CMD... | unshare-cgroup2 DIR CMD...\n", argv[0]);
  return 2;
}
