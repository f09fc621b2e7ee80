/*
 * deltaci disk tool: the host-side work on a job's disk image, without util-linux's mount and
 * umount (one small exec instead of two big ones per job). Built once per content hash
 * (see native-tools.ts).
 *   extents FILE          prints the data extents of FILE ("OFFSET LENGTH" lines; holes skipped)
 *   mount IMAGE DIR       attaches IMAGE to a free loop device (autoclear: it is released with
 *                         its last mount) and mounts it at DIR as ext4, nosuid, nodev, noatime,
 *                         noinit_itable; prints the loop device
 *   write PACK DATA SIZE IMAGE OFFSET:LENGTH...
 *                         creates IMAGE (it must not exist) as a sparse file of SIZE bytes holding
 *                         the runs of a template pack (disk-template.ts): run i is LENGTH bytes at
 *                         OFFSET of IMAGE, read in order from PACK starting at byte DATA
 *   write-mount PACK DATA SIZE IMAGE DIR OFFSET:LENGTH...
 *                         `write`, then `mount IMAGE DIR`: one exec per job disk instead of a
 *                         dozen file operations in the host and then this tool
 *   umount DIR...         unmounts each DIR in order (lazily when busy); missing ones are skipped
 */
#define _GNU_SOURCE
#include "disk-ops.h"

int main(int argc, char **argv) { return disk_tool_main(argc, argv); }
