/*
 * The disk tool's work (see disk-tool.c for the commands), shared by disk-tool.c (its own exec, the
 * fallback when no spawner runs) and spawner.c, which runs it in the child it forks, with no exec.
 */
#ifndef DELTACI_DISK_OPS_H
#define DELTACI_DISK_OPS_H
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

static int run_extents(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { perror("deltaci: open"); return 1; }
  off_t end = lseek(fd, 0, SEEK_END), at = 0;
  while (at < end) {
    off_t data = lseek(fd, at, SEEK_DATA);
    if (data < 0) break; /* ENXIO: only a hole is left */
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = end;
    printf("%lld %lld\n", (long long)data, (long long)(hole - data));
    at = hole;
  }
  return 0;
}

/* A free loop device configured on `image` with autoclear; retried when another process takes it first. */
static int attach_loop(const char *image, char *dev, size_t devlen) {
  int file = open(image, O_RDWR | O_CLOEXEC);
  if (file < 0) { perror("deltaci: open image"); return -1; }
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) { perror("deltaci: /dev/loop-control"); close(file); return -1; }
  for (int tries = 0; tries < 64; tries++) {
    int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) { perror("deltaci: LOOP_CTL_GET_FREE"); break; }
    snprintf(dev, devlen, "/dev/loop%d", n);
    int loop = open(dev, O_RDWR | O_CLOEXEC);
    if (loop < 0) { if (errno == ENOENT) continue; perror("deltaci: open loop device"); break; }
    struct loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.fd = (unsigned)file;
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%s", image);
    if (ioctl(loop, LOOP_CONFIGURE, &cfg) == 0) { close(ctl); close(file); return loop; }
    int err = errno;
    close(loop);
    if (err != EBUSY) { errno = err; perror("deltaci: LOOP_CONFIGURE"); break; }
  }
  close(ctl);
  close(file);
  return -1;
}

static int run_mount(const char *image, const char *dir) {
  char dev[64];
  int loop = attach_loop(image, dev, sizeof dev);
  if (loop < 0) return 1;
  /* The mount holds the device; closing ours lets autoclear release it with the last unmount. */
  int rc = mount(dev, dir, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "noinit_itable");
  if (rc != 0) perror("deltaci: mount ext4");
  close(loop);
  if (rc != 0) return 1;
  printf("%s\n", dev);
  return 0;
}

static int write_image(const char *pack, const char *data, const char *size, const char *image, int n, char **runs) {
  char *end;
  long long from = strtoll(data, &end, 10), total = strtoll(size, &end, 10);
  if (from < 0 || total <= 0) { fprintf(stderr, "deltaci: bad pack offset or image size\n"); return 1; }
  int in = open(pack, O_RDONLY | O_CLOEXEC);
  if (in < 0) { perror("deltaci: open pack"); return 1; }
  int out = open(image, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0) { perror("deltaci: create image"); close(in); return 1; }
  int rc = 0;
  if (ftruncate(out, (off_t)total) != 0) { perror("deltaci: size image"); rc = 1; }
  static char buf[1 << 16];
  for (int i = 0; i < n && rc == 0; i++) {
    long long at = strtoll(runs[i], &end, 10), left = *end == ':' ? strtoll(end + 1, &end, 10) : -1;
    if (at < 0 || left <= 0 || *end != 0 || at + left > total) { fprintf(stderr, "deltaci: bad run %s\n", runs[i]); rc = 1; break; }
    while (left > 0) {
      ssize_t got = pread(in, buf, left < (long long)sizeof buf ? (size_t)left : sizeof buf, (off_t)from);
      if (got <= 0) { fprintf(stderr, "deltaci: pack %s ends early\n", pack); rc = 1; break; }
      for (ssize_t off = 0; off < got;) {
        ssize_t put = pwrite(out, buf + off, (size_t)(got - off), (off_t)(at + off));
        if (put < 0) { perror("deltaci: write image"); rc = 1; break; }
        off += put;
      }
      if (rc != 0) break;
      from += got;
      at += got;
      left -= got;
    }
  }
  close(in);
  if (close(out) != 0 && rc == 0) { perror("deltaci: close image"); rc = 1; }
  return rc;
}

static int run_umount(int n, char **dirs) {
  int rc = 0;
  for (int i = 0; i < n; i++) {
    if (umount2(dirs[i], UMOUNT_NOFOLLOW) == 0 || errno == EINVAL || errno == ENOENT) continue;
    if (umount2(dirs[i], MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL && errno != ENOENT) {
      fprintf(stderr, "deltaci: umount %s: %s\n", dirs[i], strerror(errno));
      rc = 1;
    }
  }
  return rc;
}

static int disk_tool_main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "extents") == 0) return run_extents(argv[2]);
  if (argc == 4 && strcmp(argv[1], "mount") == 0) return run_mount(argv[2], argv[3]);
  if (argc >= 2 && strcmp(argv[1], "umount") == 0) return run_umount(argc - 2, argv + 2);
  if (argc >= 6 && strcmp(argv[1], "write") == 0) return write_image(argv[2], argv[3], argv[4], argv[5], argc - 6, argv + 6);
  if (argc >= 7 && strcmp(argv[1], "write-mount") == 0) {
    if (write_image(argv[2], argv[3], argv[4], argv[5], argc - 7, argv + 7) != 0) return 1;
    return run_mount(argv[5], argv[6]);
  }
  fprintf(stderr, "usage: %s extents FILE | mount IMAGE DIR | write PACK DATA SIZE IMAGE OFFSET:LENGTH... | write-mount PACK DATA SIZE IMAGE DIR OFFSET:LENGTH... | umount DIR...\n", argv[0]);
  return 2;
}

#endif
