/*
 * Shared by sandbox-helper.c (`unshare-cgroup2`, a separate exec) and spawner.c (in the child it
 * forks for a crun command, so crun starts without that extra exec). Hybrid cgroup hosts only.
 */
#ifndef DELTACI_PRIVATE_MOUNT_NS_H
#define DELTACI_PRIVATE_MOUNT_NS_H
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

/* In our private mount namespace, CMD's binary becomes a read-only bind mount of itself: what crun
 * (like runc, against CVE-2019-5736) would otherwise do by re-executing a protected copy of itself. */
static inline void protect_exe(char **argv, char *path, size_t len) {
  const char *dirs = strchr(argv[0], '/') ? "" : getenv("PATH");
  for (const char *d = dirs ? dirs : ""; ; d = strchr(d, ':') + 1) {
    size_t n = strcspn(d, ":");
    snprintf(path, len, "%.*s%s%s", (int)n, d, n ? "/" : "", argv[0]);
    if (access(path, X_OK) == 0) break;
    if (!strchr(d, ':')) { snprintf(path, len, "%s", argv[0]); return; }
  }
  if (mount(path, path, NULL, MS_BIND, NULL) == 0 && mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0)
    setenv("_LIBCONTAINER_CLONED_BINARY", "1", 1);
}

/* Enters a private mount namespace without the mount at DIR. Returns 0, or -1 with a message on stderr. */
static inline int unshare_without(const char *dir) {
  if (unshare(CLONE_NEWNS) != 0) { perror("deltaci: unshare"); return -1; }
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) { perror("deltaci: make-private"); return -1; }
  if (umount2(dir, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) { perror("deltaci: umount"); return -1; }
  return 0;
}

/*
 * Enters a private mount namespace without the mount at DIR (the cgroup2 mount, which crun 1.8
 * refuses on a hybrid host; the host's mount table is not changed) and protects argv[0]'s binary;
 * `exe` gets the path to exec. Returns 0, or -1 with a message on stderr.
 */
static inline int hide_mount(const char *dir, char **argv, char *exe, size_t len) {
  if (unshare_without(dir) != 0) return -1;
  protect_exe(argv, exe, len);
  return 0;
}
#endif
