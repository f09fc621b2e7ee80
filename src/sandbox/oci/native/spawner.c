/*
 * deltaci spawner: a small resident process that runs commands for the runner host, so the
 * ~100 MB node host does not fork itself (page tables and all) for each crun, disk tool or
 * umount it runs. Built once per content hash (see native-tools.ts); started by resident-spawner.ts.
 *
 *   spawner DIR    listens on DIR/s (DIR must be a private 0700 directory); prints "ready\n"
 *
 * Requests: u32 big-endian length, then NUL-terminated fields. After an R or D (or +R, +D) command's reply
 * the connection stays open for the client's next request (up to IDLE_MAX idle connections are kept):
 *   "C" TOKEN            keep this connection as channel TOKEN (fd 3 of a later "D" command)
 *   "R" "" ARGV...       run ARGV (stdin /dev/null), collect stdout and stderr to EOF
 *   "D" TOKEN ARGV...    run ARGV with channel TOKEN as fd 3, stdout /dev/null; once it exits,
 *                        take what its stderr holds (its detached children may keep the pipe)
 *   "R/DIR" or "D/DIR"   the same, run in a private mount namespace without the mount at /DIR
 *                        (hybrid cgroup hosts: crun 1.8 refuses the cgroup2 mount), ARGV's binary
 *                        bind-mounted read-only over itself: what sandbox-helper's unshare-cgroup2
 *                        does, done in the forked child instead of an extra exec
 *   "+R" ... "+D/DIR"    the same with NAME before ARGV: run built-in tool NAME in the forked child,
 *                        no exec ("disk-tool", disk-ops.h; "crun", crun-builtin.h, when built with
 *                        -DDELTACI_LIBCRUN); ARGV[0] is exec'd when "crun" does not take ARGV
 * Reply: i32 pid once started, then i32 exit code (128+signal; 127 when exec failed),
 * u32 length + stdout, u32 length + stderr. Integers are big-endian.
 * One process, one poll loop: each command is one fork+exec of this small process (no request
 * process in between; a built-in tool, one fork); it is the subreaper of what its commands leave behind.
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
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "private-mount-ns.h"
#include "disk-ops.h"
#ifdef DELTACI_LIBCRUN
#include "crun-builtin.h"
#endif

#define REQ_MAX (1 << 20)
#define OUT_MAX (16 << 20)
#define CHANNELS 64
#define MAX_CMDS 256
#define IDLE_MAX 32

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

/* A command being run: its connection, and (R) its output pipes until both reach EOF. */
struct cmd {
  pid_t pid; /* 0: free */
  int conn;
  char kind;
  int out, err; /* read ends, -1 once closed */
  struct buf so, se;
  int exited, status;
};
static struct cmd cmds[MAX_CMDS];

/* Connections that got their reply and wait for their client's next request (or EOF). */
static int idle[IDLE_MAX];
static int nidle;

static void keep_or_close(int conn, int ok) {
  if (ok && nidle < IDLE_MAX) idle[nidle++] = conn;
  else close(conn);
}

static void finish(struct cmd *c) {
  if (c->kind == 'D' && c->err >= 0) { /* its detached children may keep the pipe: take what it holds */
    char tmp[65536];
    ssize_t r;
    while ((r = read(c->err, tmp, sizeof tmp)) > 0) buf_add(&c->se, tmp, (size_t)r);
  }
  if (c->out >= 0) close(c->out);
  if (c->err >= 0) close(c->err);
  int code = WIFEXITED(c->status) ? WEXITSTATUS(c->status) : 128 + WTERMSIG(c->status);
  int ok = write_u32(c->conn, (uint32_t)code) == 0 && write_u32(c->conn, (uint32_t)c->so.len) == 0 &&
           (c->so.len == 0 || write_full(c->conn, c->so.data, c->so.len) == 0) && write_u32(c->conn, (uint32_t)c->se.len) == 0 &&
           (c->se.len == 0 || write_full(c->conn, c->se.data, c->se.len) == 0);
  keep_or_close(c->conn, ok);
  free(c->so.data);
  free(c->se.data);
  memset(c, 0, sizeof *c);
}

static void maybe_finish(struct cmd *c) {
  if (c->pid > 0 && c->exited && (c->kind == 'D' || (c->out < 0 && c->err < 0))) finish(c);
}

/* Runs built-in tool `name` in the forked child; returns only if it does not take argv (exec it then). */
static void run_builtin(const char *name, char **argv) {
  int argc = 0;
  while (argv[argc] != NULL) argc++;
  int rc;
  if (strcmp(name, "disk-tool") == 0) rc = disk_tool_main(argc, argv);
#ifdef DELTACI_LIBCRUN
  else if (strcmp(name, "crun") == 0) {
    if ((rc = crun_builtin(argc, argv)) == -2) return;
  }
#endif
  else {
    dprintf(2, "deltaci spawner: no built-in tool %s", name);
    rc = 127;
  }
  fflush(stdout);
  fflush(stderr);
  _exit(rc);
}

/* Forks and execs argv (this process forks nothing else per command); replies with its pid now, the
 * rest once it ends. `tool`: the name of a built-in tool run in the child without an exec, or NULL. */
static void start(int conn, int chan, char kind, const char *tool, const char *hide, char **argv) {
  struct cmd *c = NULL;
  for (int i = 0; i < MAX_CMDS && c == NULL; i++) if (cmds[i].pid == 0) c = &cmds[i];
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  int null = -1;
  if (c == NULL || (kind == 'R' && pipe2(out, O_CLOEXEC) < 0) || pipe2(err, O_CLOEXEC) < 0 || (null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) goto fail;
  pid_t pid = fork();
  if (pid < 0) goto fail;
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, 0);
    place(null, 0);
    place(kind == 'R' ? out[1] : null, 1);
    place(err[1], 2);
    if (chan >= 0) place(chan, 3);
    if (hide != NULL && unshare_without(hide) != 0) _exit(125);
    if (tool != NULL) {
      // No exec follows, so close-on-exec closes nothing: drop every fd of the spawner's
      // (listening socket, signalfd, clients' connections, channels), as the exec'd tool had none.
      syscall(SYS_close_range, chan >= 0 ? 4U : 3U, ~0U, 0U);
      run_builtin(tool, argv);
    }
    if (hide != NULL) {
      static char exe[4096];
      protect_exe(argv, exe, sizeof exe);
      execv(exe, argv);
    } else execvp(argv[0], argv);
    dprintf(2, "deltaci spawner: exec %s: %s", argv[0], strerror(errno));
    _exit(127);
  }
  close(null);
  if (out[1] >= 0) close(out[1]);
  close(err[1]);
  if (chan >= 0) close(chan);
  if (kind == 'D') fcntl(err[0], F_SETFL, O_NONBLOCK);
  *c = (struct cmd){.pid = pid, .conn = conn, .kind = kind, .out = out[0], .err = err[0]};
  write_u32(conn, (uint32_t)pid);
  return;
fail:
  for (int i = 0; i < 2; i++) {
    if (out[i] >= 0) close(out[i]);
    if (err[i] >= 0) close(err[i]);
  }
  if (null >= 0) close(null);
  if (chan >= 0) close(chan);
  close(conn);
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
  const char *k = n > 0 ? fields[0] : "";
  int builtin = k[0] == '+';
  k += builtin;
  char kind = k[0];
  const char *hide = kind != 0 && k[1] == '/' ? k + 1 : NULL;
  if (kind != 0 && k[1] != 0 && hide == NULL) kind = 0; /* a malformed kind */
  const char *tool = builtin && n >= 4 ? fields[2] : NULL;
  if (builtin && tool == NULL) kind = 0;
  if (kind == 'C' && n == 2 && hide == NULL && !builtin) {
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
      start(conn, chan, kind, tool, hide, fields + (tool != NULL ? 3 : 2));
      free(req);
      return;
    }
  }
  free(req);
  close(conn);
}

/* Reaps every child that ended: our commands, and orphans reparented to us (we are their subreaper). */
static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_CMDS; i++) {
      if (cmds[i].pid != pid) continue;
      cmds[i].exited = 1;
      cmds[i].status = status;
      maybe_finish(&cmds[i]);
    }
  }
}

/* Moves what a command wrote into its buffers; closes a pipe at EOF. */
static void drain(struct cmd *c, int *fd, struct buf *b) {
  char tmp[65536];
  ssize_t r = read(*fd, tmp, sizeof tmp);
  if (r < 0 && errno == EINTR) return;
  if (r <= 0) {
    close(*fd);
    *fd = -1;
    maybe_finish(c);
    return;
  }
  buf_add(b, tmp, (size_t)r);
}

int main(int argc, char **argv) {
  if (argc != 2 || strlen(argv[1]) + 3 > sizeof sock_path) { fprintf(stderr, "usage: spawner DIR\n"); return 2; }
#ifdef DELTACI_LIBCRUN
  /* libcrun's constructor re-executed us from a read-only copy (crun-builtin.h) and marked our
   * environment with _LIBCONTAINER_CLONED_BINARY=1: our commands (an exec'd crun among them)
   * get the environment the host gave us, as they do from a spawner without libcrun. */
  unsetenv("_LIBCONTAINER_CLONED_BINARY");
#endif
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 0;
  /* A process group of our own: a SIGKILL of the host's group (a controller terminating its
   * runner) then reaches us as the parent-death SIGTERM, and we remove DIR before we go. */
  setpgid(0, 0);
  snprintf(dir_path, sizeof dir_path, "%s", argv[1]);
  snprintf(sock_path, sizeof sock_path, "%s/s", argv[1]);
  /* Orphans of our commands (crun's intermediate processes, a container's init once crun exits)
   * are reparented to us and reaped here, so their CPU time shows in our cutime too. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  struct sigaction sa = {0};
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0); /* accepted ones block */
  struct sockaddr_un addr = {0};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, sock_path, strlen(sock_path));
  umask(077);
  if (sfd < 0 || lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 128) < 0) {
    perror("deltaci spawner: listen");
    return 1;
  }
  if (write_full(1, "ready\n", 6) < 0) { cleanup(); return 1; }
  static struct pollfd p[3 + 2 * MAX_CMDS + IDLE_MAX];
  static struct { struct cmd *c; int which; } at[3 + 2 * MAX_CMDS + IDLE_MAX];
  for (;;) {
    int n = 0;
    p[n++] = (struct pollfd){0, POLLIN, 0};
    p[n++] = (struct pollfd){sfd, POLLIN, 0};
    p[n++] = (struct pollfd){lfd, POLLIN, 0};
    for (int i = 0; i < MAX_CMDS; i++) {
      if (cmds[i].pid == 0 || cmds[i].kind != 'R') continue;
      if (cmds[i].out >= 0) { at[n].c = &cmds[i]; at[n].which = 1; p[n++] = (struct pollfd){cmds[i].out, POLLIN, 0}; }
      if (cmds[i].err >= 0) { at[n].c = &cmds[i]; at[n].which = 2; p[n++] = (struct pollfd){cmds[i].err, POLLIN, 0}; }
    }
    for (int i = 0; i < nidle; i++) { at[n].c = NULL; at[n].which = 3; p[n++] = (struct pollfd){idle[i], POLLIN, 0}; }
    if (poll(p, (nfds_t)n, -1) < 0) { if (errno == EINTR) continue; break; }
    if (p[0].revents != 0) {
      char c;
      ssize_t r = read(0, &c, 1);
      if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) break; /* the host is gone */
    }
    /* New connections first, all that wait: a D request on an idle connection names a channel
     * whose C request came on a new connection, connected and written before it. */
    if (p[2].revents & POLLIN) {
      for (int conn; (conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0;) serve(conn);
    }
    for (int i = 3; i < n; i++) {
      if (p[i].revents == 0 || at[i].which != 3) continue;
      /* an idle connection's next request (or its EOF): off the idle list, then served as a new one */
      for (int k = 0; k < nidle; k++) {
        if (idle[k] != p[i].fd) continue;
        idle[k] = idle[--nidle];
        serve(p[i].fd);
        break;
      }
    }
    for (int i = 3; i < n; i++) {
      if (p[i].revents == 0 || at[i].which == 3) continue;
      struct cmd *c = at[i].c;
      if (at[i].which == 1 && c->out == p[i].fd) drain(c, &c->out, &c->so);
      else if (at[i].which == 2 && c->err == p[i].fd) drain(c, &c->err, &c->se);
    }
    if (p[1].revents != 0) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {}
      reap();
    }
  }
  cleanup();
  return 0;
}
