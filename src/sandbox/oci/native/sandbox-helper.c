/*
 * deltaci sandbox helper, built once per content hash (see native-tools.ts).
 *   init CTLFD [PORT SOCKET]  pid 1 of a job container: reaps orphans, ignores signals, runs steps on
 *                             request over the control channel CTLFD (a socketpair the host keeps; see
 *                             below); with PORT and SOCKET forwards 127.0.0.1:PORT to the egress proxy.
 *   unshare-cgroup2 DIR CMD.. host side: private mount namespace without the cgroup2 mount at DIR
 *                             (hybrid hosts, where crun 1.8 refuses to run), then exec CMD from a
 *                             read-only bind mount of its binary (so crun need not clone itself).
 *   idmap-mount SRC DST BASE COUNT
 *                             host side: mounts SRC at DST read-only (nosuid, nodev), with ids
 *                             0..COUNT-1 of SRC seen as BASE..BASE+COUNT-1 (an idmapped mount).
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
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "private-mount-ns.h"

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
 *               'D' (during a step, after its 'S') relay what its pipes hold now, then close them:
 *                   something outside the step's processes holds them open (the host has killed
 *                   every process of the job but init), and the step must still end
 * init -> host  'O' / 'E' stdout / stderr bytes of the step, in order per stream
 *               'S' the script's end: "exit N" or "signal N"
 *               'R' the step is over: its script has ended and both its pipes are closed
 * One step at a time. Init itself runs the script and relays its output: as the pid namespace's
 * init it cannot be stopped or killed from inside, and it is not dumpable, so a step cannot
 * ptrace it; only init ever writes to the channel, so the frames stay whole. When the host
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

/* A frame leaves in one write, so a host that reads slowly never sees a torn one. */
static void send_frame(int fd, char type, const char *data, size_t len) {
  static char frame[5 + FRAME_MAX];
  if (len > FRAME_MAX) len = FRAME_MAX;
  frame[0] = type;
  frame[1] = (char)(len >> 24); frame[2] = (char)(len >> 16); frame[3] = (char)(len >> 8); frame[4] = (char)len;
  memcpy(frame + 5, data, len);
  if (write_all(fd, frame, 5 + len) != 0) _exit(0); /* the host is gone: so is the job */
}

static void send_text(int fd, char type, const char *fmt, int value) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, fmt, value);
  send_frame(fd, type, buf, n > 0 ? (size_t)n : 0);
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

/* The step's script, in the forked child: working dir, pipes, own session, then exec. */
__attribute__((noreturn)) static void exec_step(char **strs, int n, int out, int err) {
  int argc = n >= 2 ? atoi(strs[1]) : -1;
  int envc = argc >= 1 && n >= 3 + argc ? atoi(strs[2 + argc]) : -1;
  dup2(out, 1);
  dup2(err, 2);
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) dup2(null, 0);
  if (envc < 0 || n != 3 + argc + envc) {
    fprintf(stderr, "deltaci: malformed step request\n");
    _exit(125);
  }
  char **argv = strs + 2, **envp = strs + 3 + argc;
  argv[argc] = NULL; /* overwrites the envc string, already parsed */
  envp[envc] = NULL;
  if (mkdir_p(strs[0]) != 0 || chdir(strs[0]) != 0) {
    fprintf(stderr, "deltaci: cannot enter working directory %s: %s\n", strs[0], strerror(errno));
    _exit(125);
  }
  setsid();
  environ = envp;
  execvp(argv[0], argv);
  fprintf(stderr, "deltaci: cannot run %s: %s\n", argv[0], strerror(errno));
  _exit(errno == ENOENT ? 127 : 126);
}

/* The running step, as init sees it. */
struct step {
  pid_t pid;      /* 0: no step; -1: its script has ended */
  int fds[2];     /* stdout, stderr read ends; -1 when closed */
};

/* Forks the step's script with its output on pipes; reports a failed start as its end. */
static void start_step(int ctl, struct step *st, char *req, size_t len) {
  static char *strs[65536];
  int n = split_strings(req, len, strs, 65535);
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) out[0] = out[1] = -1;
  if (out[0] < 0 || pipe2(err, O_CLOEXEC) != 0) {
    if (out[0] >= 0) { close(out[0]); close(out[1]); }
    send_text(ctl, 'S', "exit %d", 125);
    send_text(ctl, 'R', "%d", 0);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    exec_step(strs, n, out[1], err[1]);
  }
  close(out[1]);
  close(err[1]);
  st->fds[0] = out[0];
  st->fds[1] = err[0];
  if (pid < 0) {
    const char msg[] = "deltaci: fork failed\n";
    send_frame(ctl, 'E', msg, sizeof msg - 1);
    send_text(ctl, 'S', "exit %d", 125);
    st->pid = -1;
  } else {
    st->pid = pid;
  }
}

/* Relays what a step's pipes hold right now, without waiting for more, and closes them. */
static void drain_step(int ctl, struct step *st) {
  static char buf[FRAME_MAX];
  const char types[2] = {'O', 'E'};
  for (int i = 0; i < 2; i++) {
    if (st->fds[i] < 0) continue;
    fcntl(st->fds[i], F_SETFL, O_NONBLOCK);
    ssize_t r;
    while ((r = read(st->fds[i], buf, sizeof buf)) > 0) send_frame(ctl, types[i], buf, (size_t)r);
    close(st->fds[i]);
    st->fds[i] = -1;
  }
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
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* no ptrace and no /proc/1/fd for the job */
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  sigprocmask(SIG_BLOCK, &all, NULL);
  int sfd = signalfd(-1, &all, SFD_CLOEXEC);
  int lfd = argv[0] && argv[1] ? listen_loopback(atoi(argv[0])) : -1;
  struct step st = {0, {-1, -1}};
  static char req[1 << 20];
  static char buf[FRAME_MAX];
  const char types[2] = {'O', 'E'};
  for (;;) {
    int busy = st.pid != 0;
    struct pollfd p[5] = {
      {sfd, POLLIN, 0}, {lfd, POLLIN, 0},
      /* while a step runs, init watches the channel only for the host's hang-up */
      {ctl, busy ? POLLIN | POLLRDHUP : POLLIN, 0},
      {st.fds[0], POLLIN, 0}, {st.fds[1], POLLIN, 0},
    };
    if (poll(p, 5, -1) < 0) continue;
    if (p[2].revents & (POLLRDHUP | POLLHUP | POLLERR)) _exit(0); /* the host is gone: so is the job */
    if (busy && (p[2].revents & POLLIN)) {
      unsigned char h[5];
      if (read_all(ctl, h, sizeof h) != 0 || h[0] != 'D' || (h[1] | h[2] | h[3] | h[4]) != 0) _exit(0); /* only 'D' during a step */
      drain_step(ctl, &st);
    }
    for (int i = 0; i < 2; i++) {
      if (st.fds[i] < 0 || !(p[3 + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(st.fds[i], buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) { close(st.fds[i]); st.fds[i] = -1; continue; }
      send_frame(ctl, types[i], buf, (size_t)r);
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      ssize_t r = read(sfd, &si, sizeof si);
      (void)r;
      pid_t pid;
      int status;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        /* a traced script reports stops too: only its real end is the step's end */
        if (pid != st.pid || !(WIFEXITED(status) || WIFSIGNALED(status))) continue;
        st.pid = -1;
        if (WIFSIGNALED(status)) send_text(ctl, 'S', "signal %d", WTERMSIG(status));
        else send_text(ctl, 'S', "exit %d", WIFEXITED(status) ? WEXITSTATUS(status) : 125);
      }
    }
    /* the script has ended and what it left behind has let go of its pipes (the host kills it) */
    if (st.pid == -1 && st.fds[0] < 0 && st.fds[1] < 0) {
      st.pid = 0;
      send_text(ctl, 'R', "%d", 0);
    }
    if (lfd >= 0 && (p[1].revents & POLLIN)) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue;
      /* the child connects: a busy proxy must never block init */
      if (fork() == 0) {
        sigprocmask(SIG_SETMASK, &none, NULL);
        close(ctl); close(sfd); close(lfd);
        for (int i = 0; i < 2; i++) if (st.fds[i] >= 0) close(st.fds[i]);
        int u = connect_unix(argv[1]);
        if (u < 0) _exit(0);
        relay(c, u);
      }
      close(c);
    }
    if (!busy && (p[2].revents & POLLIN)) {
      unsigned char h[5];
      if (read_all(ctl, h, sizeof h) != 0) _exit(0);
      size_t len = ((size_t)h[1] << 24) | ((size_t)h[2] << 16) | ((size_t)h[3] << 8) | h[4];
      if (h[0] != 'X' || len > sizeof req || read_all(ctl, req, len) != 0) _exit(0);
      start_step(ctl, &st, req, len);
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
  static char exe[4096];
  if (hide_mount(dir, argv, exe, sizeof exe) != 0) return 125;
  execv(exe, argv);
  fprintf(stderr, "deltaci: cannot run %s: %s\n", argv[0], strerror(errno));
  return 127;
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = write_all(fd, text, strlen(text));
  close(fd);
  return rc;
}

/* A user namespace mapping 0..count-1 to base..: created by a child that waits until we hold it. */
static int userns_fd(unsigned long base, unsigned long count) {
  int ready[2], hold[2];
  if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(hold, O_CLOEXEC) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(ready[0]);
    close(hold[1]);
    char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    if (read(hold[0], &c, 1) < 0) _exit(1);
    _exit(0);
  }
  close(ready[1]);
  close(hold[0]);
  char c = 'n', path[64], map[64];
  int fd = -1;
  if (read(ready[0], &c, 1) == 1 && c == 'y') {
    snprintf(map, sizeof map, "0 %lu %lu\n", base, count);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    int ok = write_file(path, map) == 0;
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    ok = ok && write_file(path, map) == 0;
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    if (ok) fd = open(path, O_RDONLY | O_CLOEXEC);
  }
  close(hold[1]);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
  return fd;
}

static int run_idmap_mount(const char *src, const char *dst, const char *base, const char *count) {
  int ns = userns_fd(strtoul(base, NULL, 10), strtoul(count, NULL, 10));
  if (ns < 0) { perror("deltaci: user namespace for the id mapping"); return 125; }
  int tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (tree < 0) { perror("deltaci: open_tree"); return 125; }
  struct mount_attr attr = {0};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  attr.userns_fd = (uint64_t)ns;
  if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) { perror("deltaci: mount_setattr (idmap)"); return 125; }
  if (move_mount(tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) != 0) { perror("deltaci: move_mount"); return 125; }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "init") == 0) run_init(argv + 2);
  if (argc >= 4 && strcmp(argv[1], "unshare-cgroup2") == 0) return run_unshare(argv[2], argv + 3);
  if (argc == 6 && strcmp(argv[1], "idmap-mount") == 0) return run_idmap_mount(argv[2], argv[3], argv[4], argv[5]);
  fprintf(stderr, "usage: %s init CTLFD [PORT SOCKET] | unshare-cgroup2 DIR CMD... | idmap-mount SRC DST BASE COUNT\n", argv[0]);
  return 2;
}
