/*
 * crun's `run -d` and `delete -f`, done by libcrun in the spawner's forked child (spawner.c, built
 * with -DDELTACI_LIBCRUN and Debian's static libcrun.a): no exec of crun, so none of its start-up
 * (loading ~11 shared libraries: ~2 ms CPU per command here). Only the two command lines Delta CI
 * sends are taken; anything else is left to the crun binary (crun_builtin returns -2).
 *
 * libcrun.a ships no headers: what is declared here is copied from crun 1.8.1's
 * src/libcrun/container.h and error.h (commit f8a096be060b22ccd3d5f3ebe44108517fbf6c30, Debian 12's
 * crun 1.8.1-1+deb12u1), and must match the libcrun.a it links: native-tools.ts links it only when
 * `crun --version` names that commit. What a command does is what crun 1.8.1's src/run.c,
 * src/delete.c and init_libcrun_context (src/crun.c) do with the same arguments; the container's
 * configuration is the same config.json, read by the same code.
 *
 * Linked into the spawner, libcrun's constructor (linux.c, against CVE-2019-5736) re-executes the
 * spawner from a sealed copy of itself once at its start: a container's process is a fork of that
 * copy until it execs the container's init, as it was a fork of crun's copy.
 */
#ifndef DELTACI_CRUN_BUILTIN_H
#define DELTACI_CRUN_BUILTIN_H
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* error.h */
struct libcrun_error_s {
  int status;
  char *msg;
};
typedef struct libcrun_error_s *libcrun_error_t;
typedef void (*crun_output_handler)(int errno_, const char *msg, bool warning, void *arg);
void libcrun_fail_with_error(int errno_, const char *msg, ...) __attribute__((noreturn)) __attribute__((format(printf, 2, 3)));
int libcrun_init_logging(crun_output_handler *output_handler, void **output_handler_arg, const char *id, const char *log, libcrun_error_t *err);

/* container.h: struct libcrun_context_s, field for field */
struct custom_handler_manager_s;
typedef struct libcrun_context_s {
  const char *state_root;
  const char *id;
  const char *bundle;
  const char *console_socket;
  const char *pid_file;
  const char *notify_socket;
  const char *handler;
  int preserve_fds;
  int listen_fds;
  crun_output_handler output_handler;
  void *output_handler_arg;
  int fifo_exec_wait_fd;
  bool systemd_cgroup;
  bool detach;
  bool no_subreaper;
  bool no_new_keyring;
  bool force_no_cgroup;
  bool no_pivot;
  char **argv;
  int argc;
  struct custom_handler_manager_s *handler_manager;
} libcrun_context_t;
typedef struct libcrun_container_s libcrun_container_t; /* only passed back to libcrun */
libcrun_container_t *libcrun_container_load_from_file(const char *path, libcrun_error_t *err);
int libcrun_container_run(libcrun_context_t *context, libcrun_container_t *container, unsigned int options, libcrun_error_t *err);
int libcrun_container_delete(libcrun_context_t *context, void *def, const char *id, bool force, libcrun_error_t *err);
/* custom_handler.h */
struct custom_handler_manager_s *libcrun_handler_manager_create(libcrun_error_t *err);
int libcrun_handler_manager_load_directory(struct custom_handler_manager_s *manager, const char *path, libcrun_error_t *err);

/*
 * libsystemd is not linked: mapped into the spawner with the five libraries it pulls in (gcrypt,
 * lzma, zstd, lz4, gpg-error), it made each of the spawner's forks, for every command, ~0.3 ms
 * dearer. libcrun 1.8.1 calls it only for the systemd cgroup manager (--systemd-cgroup), for
 * --log=journald, and to relay READY=1 when NOTIFY_SOCKET is set; none of these is taken by the
 * two command lines run here (crun_builtin declines when NOTIFY_SOCKET is set), and should one
 * be reached all the same, it fails with ENOSYS rather than doing something else.
 */
#define SD_STUB(name) int name(void) { return -ENOSYS; }
SD_STUB(sd_bus_call) SD_STUB(sd_bus_default_system) SD_STUB(sd_bus_default_user) SD_STUB(sd_bus_error_get_errno)
SD_STUB(sd_bus_match_signal_async) SD_STUB(sd_bus_message_append) SD_STUB(sd_bus_message_append_strv)
SD_STUB(sd_bus_message_close_container) SD_STUB(sd_bus_message_new_method_call) SD_STUB(sd_bus_message_open_container)
SD_STUB(sd_bus_message_read) SD_STUB(sd_bus_process) SD_STUB(sd_bus_wait) SD_STUB(sd_journal_send_with_location)
SD_STUB(sd_notify) SD_STUB(sd_notify_barrier)
void *sd_bus_message_unref(void *m) { (void)m; return NULL; }
void *sd_bus_unref(void *bus) { (void)bus; return NULL; }
void sd_bus_error_free(void *e) { (void)e; }

/* crun.c's CRUN_LIBDIR "/handlers" in Debian's build */
#define CRUN_BUILTIN_HANDLERS "/usr/lib/x86_64-linux-gnu/crun/handlers"

/* crun.c's init_libcrun_context, for a crun started without --log, --log-format, --systemd-cgroup
 * or a crun-HANDLER argv[0]. */
static int crun_builtin_context(libcrun_context_t *con, const char *root, const char *id, int argc, char **argv, libcrun_error_t *err) {
  con->id = id;
  con->state_root = root;
  con->notify_socket = getenv("NOTIFY_SOCKET");
  con->fifo_exec_wait_fd = -1;
  con->argc = argc;
  con->argv = argv;
  int ret = libcrun_init_logging(&con->output_handler, &con->output_handler_arg, id, NULL, err);
  if (ret < 0) return ret;
  if (con->bundle == NULL) con->bundle = ".";
  con->handler_manager = libcrun_handler_manager_create(err);
  if (con->handler_manager == NULL) libcrun_fail_with_error((*err)->status, "%s", (*err)->msg);
  if (access(CRUN_BUILTIN_HANDLERS, F_OK) == 0) {
    ret = libcrun_handler_manager_load_directory(con->handler_manager, CRUN_BUILTIN_HANDLERS, err);
    if (ret < 0) libcrun_fail_with_error((*err)->status, "%s", (*err)->msg);
  }
  return 0;
}

/* run.c's crun_command_run for `run -d --preserve-fds=N --no-new-keyring --bundle /ABS ID`. */
static int crun_builtin_run(const char *root, int preserve_fds, const char *bundle, const char *id, int argc, char **argv, libcrun_error_t *err) {
  libcrun_context_t con = {0};
  con.detach = true;
  con.no_new_keyring = true;
  con.bundle = bundle;
  con.preserve_fds = preserve_fds;
  if (chdir(bundle) < 0) libcrun_fail_with_error(errno, "chdir `%s` failed", bundle);
  libcrun_container_t *container = libcrun_container_load_from_file("config.json", err);
  if (container == NULL) return -1;
  int ret = crun_builtin_context(&con, root, id, argc, argv, err);
  if (ret < 0) return ret;
  con.bundle = bundle;
  if (getenv("LISTEN_FDS")) {
    con.listen_fds = (int)strtoll(getenv("LISTEN_FDS"), NULL, 10);
    con.preserve_fds += con.listen_fds;
  }
  return libcrun_container_run(&con, container, 0, err); /* the process exits next: container not freed */
}

/* delete.c's crun_command_delete for `delete -f ID`. */
static int crun_builtin_delete(const char *root, const char *id, int argc, char **argv, libcrun_error_t *err) {
  libcrun_context_t con = {0};
  int ret = crun_builtin_context(&con, root, id, argc, argv, err);
  if (ret < 0) return ret;
  return libcrun_container_delete(&con, NULL, id, true, err);
}

/*
 * Runs argv (`crun --root DIR ...`) if it is one of the two command lines above, as crun's main
 * would: returns its exit code. -2: not one of them (or NOTIFY_SOCKET is set), exec the crun binary.
 */
static int crun_builtin(int argc, char **argv) {
  if (argc < 4 || strcmp(argv[1], "--root") != 0 || argv[2][0] != '/' || getenv("NOTIFY_SOCKET") != NULL) return -2;
  const char *root = argv[2];
  libcrun_error_t err = NULL;
  int ret;
  char **cmd = argv + 3;
  int n = argc - 3;
  const char *fds = "--preserve-fds=";
  if (n == 7 && strcmp(cmd[0], "run") == 0 && strcmp(cmd[1], "-d") == 0 && strncmp(cmd[2], fds, strlen(fds)) == 0 &&
      strcmp(cmd[3], "--no-new-keyring") == 0 && strcmp(cmd[4], "--bundle") == 0 && cmd[5][0] == '/' && cmd[6][0] != '-') {
    char *end;
    long preserve = strtol(cmd[2] + strlen(fds), &end, 10);
    if (*end != '\0' || preserve < 0 || preserve > 1024) return -2;
    ret = crun_builtin_run(root, (int)preserve, cmd[5], cmd[6], argc, argv, &err);
  } else if (n == 3 && strcmp(cmd[0], "delete") == 0 && strcmp(cmd[1], "-f") == 0 && cmd[2][0] != '-') {
    ret = crun_builtin_delete(root, cmd[2], argc, argv, &err);
  } else {
    return -2;
  }
  /* crun.c's main */
  if (ret && err) libcrun_fail_with_error(err->status, "%s", err->msg);
  return ret & 0xff;
}
#endif
