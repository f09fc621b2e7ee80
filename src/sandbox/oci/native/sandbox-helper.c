/*
 * deltaci sandbox helper, built once per content hash (see native-tools.ts).
 *   init CTLFD [PORT SOCKET]  pid 1 of a job container: reaps orphans, ignores signals, runs steps on
 *                             request over the control channel CTLFD (a socketpair the host keeps; see
 *                             below); with PORT and SOCKET forwards 127.0.0.1:PORT to the egress proxy.
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

/*
 * Control channel (CTLFD, a stream socket): frames are [type u8][length u32 big-endian][data].
 * host -> init  'X' run a step: data = NUL-terminated strings: cwd, argc, argv..., envc, env...
 * init -> host  'P' the step supervisor's pid (decimal, in the container's pid namespace)
 *               'O' / 'E' stdout / stderr bytes of the step, in order per stream
 *               'S' the script's end: "exit N" or "signal N"
 *               'R' the supervisor is gone (sent by init after reaping it): the step is over
 * One step at a time: init does not read the channel while a supervisor runs. When the host
 * closes the channel, init exits and the kernel kills every process of the container.
 */
#define FRAME_MAX 65536

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_all(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int send_frame(int fd, char type, const char *data, size_t len) {
  unsigned char h[5] = {(unsigned char)type, (unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8), (unsigned char)len};
  return write_all(fd, h, sizeof h) == 0 && write_all(fd, data, len) == 0 ? 0 : -1;
}

static int send_text(int fd, char type, const char *fmt, int value) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, fmt, value);
  return send_frame(fd, type, buf, n > 0 ? (size_t)n : 0);
}

static int mkdir_p(const char *dir);

/* Splits a request's NUL-terminated strings; returns the count, or -1 when malformed. */
static int split_strings(char *data, size_t len, char **out, int max) {
  int n = 0;
  for (size_t off = 0; off < len; n++) {
    char *end = memchr(data + off, 0, len - off);
    if (!end || n >= max) return -1;
    out[n] = data + off;
    off = (size_t)(end - data) + 1;
  }
  return n;
}

/*
 * The step supervisor, forked from init per step: runs the script in its own session with its
 * stdout and stderr on pipes, relays both as frames, reports its end, and exits once both pipes
 * are closed (the host kills what the script left behind when it sees 'S'). It ignores the
 * signals the host sends to the step's processes; the host spares it by its pid.
 */
__attribute__((noreturn)) static void run_supervisor(int ctl, char *req, size_t len) {
  static char *strs[65536];
  int n = split_strings(req, len, strs, 65535);
  int argc = n >= 2 ? atoi(strs[1]) : -1;
  int envc = argc >= 1 && n >= 3 + argc ? atoi(strs[2 + argc]) : -1;
  int ignored[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE};
  for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) signal(ignored[i], SIG_IGN);
  if (send_text(ctl, 'P', "%d", (int)getpid()) != 0) _exit(1);
  if (envc < 0 || n != 3 + argc + envc) {
    const char msg[] = "deltaci: malformed step request\n";
    send_frame(ctl, 'E', msg, sizeof msg - 1);
    send_text(ctl, 'S', "exit %d", 125);
    _exit(0);
  }
  char **argv = strs + 2, **envp = strs + 3 + argc;
  argv[argc] = NULL; /* overwrites the envc string, already parsed */
  envp[envc] = NULL;
  if (mkdir_p(strs[0]) != 0 || chdir(strs[0]) != 0) {
    char msg[4200];
    int m = snprintf(msg, sizeof msg, "deltaci: cannot enter working directory %s: %s\n", strs[0], strerror(errno));
    send_frame(ctl, 'E', msg, m > 0 ? (size_t)m : 0);
    send_text(ctl, 'S', "exit %d", 125);
    _exit(0);
  }
  int out[2], err[2];
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC);
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 || sfd < 0) {
    send_text(ctl, 'S', "exit %d", 125);
    _exit(0);
  }
  pid_t child = fork();
  if (child < 0) {
    const char msg[] = "deltaci: fork failed\n";
    send_frame(ctl, 'E', msg, sizeof msg - 1);
    send_text(ctl, 'S', "exit %d", 125);
    _exit(0);
  }
  if (child == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) signal(ignored[i], SIG_DFL);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    setsid();
    environ = envp;
    execvp(argv[0], argv);
    fprintf(stderr, "deltaci: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(out[1]);
  close(err[1]);
  int fds[2] = {out[0], err[0]};
  char types[2] = {'O', 'E'};
  int open_[2] = {1, 1}, reaped = 0;
  static char buf[FRAME_MAX];
  while (open_[0] || open_[1] || !reaped) {
    struct pollfd p[3] = {{open_[0] ? fds[0] : -1, POLLIN, 0}, {open_[1] ? fds[1] : -1, POLLIN, 0}, {reaped ? -1 : sfd, POLLIN, 0}};
    if (poll(p, 3, -1) < 0) { if (errno == EINTR) continue; _exit(1); }
    for (int i = 0; i < 2; i++) {
      if (!open_[i] || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(fds[i], buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) { open_[i] = 0; continue; }
      if (send_frame(ctl, types[i], buf, (size_t)r) != 0) _exit(1);
    }
    if (!reaped && (p[2].revents & POLLIN)) {
      struct signalfd_siginfo si;
      ssize_t r = read(sfd, &si, sizeof si);
      (void)r;
      int status = 0;
      if (waitpid(child, &status, WNOHANG) == child) {
        reaped = 1;
        if (WIFSIGNALED(status)) send_text(ctl, 'S', "signal %d", WTERMSIG(status));
        else send_text(ctl, 'S', "exit %d", WIFEXITED(status) ? WEXITSTATUS(status) : 125);
      }
    }
  }
  _exit(0);
}

/* pid 1: reaps orphans, runs steps on request over CTLFD; with PORT and SOCKET, forwards
 * 127.0.0.1:PORT to the egress proxy's socket. */
__attribute__((noreturn)) static void run_init(char **argv) {
  /* crun run -d hands us its stdio: let go of it so the caller's pipes close. */
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); if (null > 2) close(null); }
  int ctl = argv[0] ? atoi(argv[0]) : -1;
  if (ctl < 3 || fcntl(ctl, F_SETFD, FD_CLOEXEC) != 0) _exit(2);
  argv++;
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  sigprocmask(SIG_BLOCK, &all, NULL);
  int sfd = signalfd(-1, &all, SFD_CLOEXEC);
  int lfd = argv[0] && argv[1] ? listen_loopback(atoi(argv[0])) : -1;
  pid_t supervisor = 0;
  static char req[1 << 20];
  for (;;) {
    /* while a step runs its supervisor owns the channel's data: init watches only for the hang-up */
    struct pollfd p[3] = {{sfd, POLLIN, 0}, {lfd, POLLIN, 0}, {ctl, supervisor ? POLLRDHUP : POLLIN, 0}};
    if (poll(p, 3, -1) < 0) continue;
    if (supervisor && (p[2].revents & (POLLRDHUP | POLLHUP | POLLERR))) _exit(0); /* the host is gone: so is the job */
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      ssize_t r = read(sfd, &si, sizeof si);
      (void)r;
      pid_t pid;
      int status;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid != supervisor) continue;
        supervisor = 0;
        if (send_text(ctl, 'R', "%d", status) != 0) _exit(0);
      }
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
    if (!supervisor && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      unsigned char h[5];
      if (read_all(ctl, h, sizeof h) != 0) _exit(0); /* the host is gone: so is the job */
      size_t len = ((size_t)h[1] << 24) | ((size_t)h[2] << 16) | ((size_t)h[3] << 8) | h[4];
      if (h[0] != 'X' || len > sizeof req || read_all(ctl, req, len) != 0) _exit(0);
      pid_t pid = fork();
      if (pid == 0) {
        close(sfd);
        if (lfd >= 0) close(lfd);
        sigprocmask(SIG_SETMASK, &none, NULL);
        run_supervisor(ctl, req, len);
      }
      if (pid > 0) supervisor = pid;
      else if (send_text(ctl, 'R', "%d", 0) != 0) _exit(0);
    }
  }
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

static int run_unshare(char *dir, char **argv) {
  if (unshare(CLONE_NEWNS) != 0) { perror("deltaci: unshare"); return 125; }
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) { perror("deltaci: make-private"); return 125; }
  if (umount2(dir, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) { perror("deltaci: umount"); return 125; }
  execvp(argv[0], argv);
  fprintf(stderr, "deltaci: cannot run %s: %s\n", argv[0], strerror(errno));
  return 127;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "init") == 0) run_init(argv + 2);
  if (argc >= 4 && strcmp(argv[1], "unshare-cgroup2") == 0) return run_unshare(argv[2], argv + 3);
  fprintf(stderr, "usage: %s init CTLFD [PORT SOCKET] | unshare-cgroup2 DIR CMD...\n", argv[0]);
  return 2;
}
