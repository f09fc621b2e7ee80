/*
 * deltaci spawner: a small resident process that runs commands for the runner host, so the
 * ~100 MB node host does not fork itself (page tables and all) for each crun, disk tool or
 * umount it runs. Built once per content hash (see native-tools.ts); started by resident-spawner.ts.
 *
 *   spawner DIR    listens on DIR/s (DIR must be a private 0700 directory); prints "ready\n"
 *
 * Requests, one per connection: u32 big-endian length, then NUL-terminated fields:
 *   "C" TOKEN            keep this connection as channel TOKEN (fd 3 of a later "D" command)
 *   "R" "" ARGV...       run ARGV (stdin /dev/null), collect stdout and stderr to EOF
 *   "D" TOKEN ARGV...    run ARGV with channel TOKEN as fd 3, stdout /dev/null; once it exits,
 *                        take what its stderr holds (its detached children may keep the pipe)
 * Reply: i32 pid once started, then i32 exit code (128+signal; 127 when exec failed),
 * u32 length + stdout, u32 length + stderr. Integers are big-endian.
 * It dies with its parent (PR_SET_PDEATHSIG, and EOF on stdin) and removes DIR/s and DIR then; it
 * runs in a process group of its own, so a group kill of its parent reaches it as that SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQ_MAX (1 << 20)
#define OUT_MAX (16 << 20)
#define CHANNELS 64

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char dir_path[sizeof(sock_path)];

static void cleanup(void) {
  unlink(sock_path);
  rmdir(dir_path);
}

static void on_term(int sig) {
  (void)sig;
  cleanup();
  /* our own process group (see main): commands still running die with us, as they did in the host's */
  kill(0, SIGKILL);
  _exit(0);
}

/* Request processes are waited for (not auto-reaped), so their CPU time shows in our cutime. */
static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
  errno = saved;
}

static int read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, (const char *)buf + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  return 0;
}

static int write_u32(int fd, uint32_t v) {
  uint32_t be = htonl(v);
  return write_full(fd, &be, 4);
}

struct buf { char *data; size_t len, cap; };

static void buf_add(struct buf *b, const char *p, size_t n) {
  if (b->len + n > OUT_MAX) n = OUT_MAX - b->len;
  if (n == 0) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL) return;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

/* Moves `fd` to `target` without close-on-exec. */
static void place(int fd, int target) {
  if (fd == target) fcntl(fd, F_SETFD, 0);
  else dup2(fd, target);
}

static struct { char token[64]; int fd; } channels[CHANNELS];

/* The per-request process: runs argv, replies on conn, exits. */
static void handle(int conn, int chan, char kind, char **argv) {
  signal(SIGCHLD, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  for (int i = 0; i < CHANNELS; i++) if (channels[i].fd > 0) close(channels[i].fd); /* other jobs' channels */
  int out[2] = {-1, -1}, err[2];
  if ((kind == 'R' && pipe2(out, O_CLOEXEC) < 0) || pipe2(err, O_CLOEXEC) < 0) _exit(1);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  pid_t pid = fork();
  if (pid < 0) _exit(1);
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, 0);
    place(null, 0);
    place(kind == 'R' ? out[1] : null, 1);
    place(err[1], 2);
    if (chan >= 0) place(chan, 3);
    execvp(argv[0], argv);
    dprintf(2, "deltaci spawner: exec %s: %s", argv[0], strerror(errno));
    _exit(127);
  }
  if (out[1] >= 0) close(out[1]);
  close(err[1]);
  if (chan >= 0) close(chan);
  write_u32(conn, (uint32_t)pid);
  struct buf so = {0}, se = {0};
  char tmp[65536];
  int status = 0;
  if (kind == 'R') {
    struct pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
      if (poll(p, 2, -1) < 0) { if (errno == EINTR) continue; break; }
      for (int i = 0; i < 2; i++) {
        if (p[i].fd < 0 || p[i].revents == 0) continue;
        ssize_t r = read(p[i].fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { close(p[i].fd); p[i].fd = -1; open_fds--; continue; }
        buf_add(i == 0 ? &so : &se, tmp, (size_t)r);
      }
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  } else {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    ssize_t r;
    while ((r = read(err[0], tmp, sizeof tmp)) > 0) buf_add(&se, tmp, (size_t)r);
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  write_u32(conn, (uint32_t)code);
  write_u32(conn, (uint32_t)so.len);
  if (so.len) write_full(conn, so.data, so.len);
  write_u32(conn, (uint32_t)se.len);
  if (se.len) write_full(conn, se.data, se.len);
  _exit(0);
}


static int take_channel(const char *token) {
  for (int i = 0; i < CHANNELS; i++) {
    if (channels[i].fd > 0 && strcmp(channels[i].token, token) == 0) {
      int fd = channels[i].fd;
      channels[i].fd = 0;
      return fd;
    }
  }
  return -1;
}

static void serve(int conn) {
  struct timeval tv = {10, 0};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint32_t len_be;
  if (read_full(conn, &len_be, 4) < 0) { close(conn); return; }
  uint32_t len = ntohl(len_be);
  if (len < 4 || len > REQ_MAX) { close(conn); return; }
  char *req = malloc(len + 1);
  if (req == NULL || read_full(conn, req, len) < 0 || req[len - 1] != '\0') { free(req); close(conn); return; }
  req[len] = '\0';
  struct timeval none = {0, 0}; /* a kept channel becomes init's fd 3: no timeout on its reads */
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  char *fields[4096];
  int n = 0;
  for (char *p = req; p < req + len && n < 4095; p += strlen(p) + 1) fields[n++] = p;
  fields[n] = NULL;
  char kind = n > 0 ? fields[0][0] : 0;
  if (kind == 'C' && n == 2) {
    for (int i = 0; i < CHANNELS; i++) {
      if (channels[i].fd == 0) {
        snprintf(channels[i].token, sizeof channels[i].token, "%s", fields[1]);
        channels[i].fd = conn;
        free(req);
        return;
      }
    }
  } else if ((kind == 'R' || kind == 'D') && n >= 3) {
    int chan = kind == 'D' ? take_channel(fields[1]) : -1;
    if (kind == 'R' || chan >= 0) {
      pid_t pid = fork();
      if (pid == 0) handle(conn, chan, kind, fields + 2);
      if (chan >= 0) close(chan);
    }
  }
  free(req);
  close(conn);
}

int main(int argc, char **argv) {
  if (argc != 2 || strlen(argv[1]) + 3 > sizeof sock_path) { fprintf(stderr, "usage: spawner DIR\n"); return 2; }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 0;
  /* A process group of our own: a SIGKILL of the host's group (a controller terminating its
   * runner) then reaches us as the parent-death SIGTERM, and we remove DIR before we go. */
  setpgid(0, 0);
  snprintf(dir_path, sizeof dir_path, "%s", argv[1]);
  snprintf(sock_path, sizeof sock_path, "%s/s", argv[1]);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sc = {0};
  sc.sa_handler = on_child;
  sc.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sc, NULL);
  struct sigaction sa = {0};
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {0};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, sock_path, strlen(sock_path));
  umask(077);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 128) < 0) {
    perror("deltaci spawner: listen");
    return 1;
  }
  if (write_full(1, "ready\n", 6) < 0) { cleanup(); return 1; }
  struct pollfd p[2] = {{0, POLLIN, 0}, {lfd, POLLIN, 0}};
  for (;;) {
    if (poll(p, 2, -1) < 0) { if (errno == EINTR) continue; break; }
    if (p[0].revents != 0) {
      char c;
      ssize_t r = read(0, &c, 1);
      if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) break; /* the host is gone */
    }
    if (p[1].revents & POLLIN) {
      int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (conn >= 0) serve(conn);
    }
  }
  cleanup();
  return 0;
}
