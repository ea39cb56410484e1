"""Linux x86-64 constants the VFS speaks: open flags, seek modes, magics, ioctls.

The guest is always x86-64 Linux, so these are spelled out rather than taken
from the host's ``os`` module, whose values differ on other architectures.
"""

# Open flags (include/uapi/asm-generic/fcntl.h, x86-64 values).
O_ACCMODE = 0o3
O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_EXCL = 0o200
O_NOCTTY = 0o400
O_TRUNC = 0o1000
O_APPEND = 0o2000
O_NONBLOCK = 0o4000
O_DSYNC = 0o10000
O_ASYNC = 0o20000
O_DIRECT = 0o40000
O_LARGEFILE = 0o100000
O_DIRECTORY = 0o200000
O_NOFOLLOW = 0o400000
O_NOATIME = 0o1000000
O_CLOEXEC = 0o2000000
O_SYNC = 0o4010000
O_PATH = 0o10000000
O_TMPFILE = 0o20200000

# Flags that only steer open itself; Linux does not keep them in f_flags.
OPEN_ONLY_FLAGS = O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC
# Flags fcntl(F_SETFL) may change on an open file description.
SETFL_FLAGS = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME

# lseek whence values.
SEEK_SET = 0
SEEK_CUR = 1
SEEK_END = 2
SEEK_DATA = 3
SEEK_HOLE = 4

# access() modes.
F_OK = 0
X_OK = 1
W_OK = 2
R_OK = 4

# renameat2 flags.
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4

# Mount flags (MS_*) and the statfs f_flags they show up as (ST_*).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
ST_VALID = 0x20

# umount2 flags.
MNT_FORCE = 1
MNT_DETACH = 2

# Directory entry types (d_type); equal to (st_mode & S_IFMT) >> 12.
DT_UNKNOWN = 0
DT_FIFO = 1
DT_CHR = 2
DT_DIR = 4
DT_BLK = 6
DT_REG = 8
DT_LNK = 10
DT_SOCK = 12

# statfs f_type magic numbers (include/uapi/linux/magic.h).
RAMFS_MAGIC = 0x858458F6
TMPFS_MAGIC = 0x01021994
PROC_SUPER_MAGIC = 0x9FA0

# statx mask bits (include/uapi/linux/stat.h).
STATX_TYPE = 0x1
STATX_MODE = 0x2
STATX_NLINK = 0x4
STATX_UID = 0x8
STATX_GID = 0x10
STATX_ATIME = 0x20
STATX_MTIME = 0x40
STATX_CTIME = 0x80
STATX_INO = 0x100
STATX_SIZE = 0x200
STATX_BLOCKS = 0x400
STATX_BASIC_STATS = 0x7FF
STATX_BTIME = 0x800
STATX_MNT_ID = 0x1000
STATX__RESERVED = 0x80000000

# Terminal and generic ioctl requests (include/uapi/asm-generic/ioctls.h).
TCGETS = 0x5401
TCSETS = 0x5402
TCSETSW = 0x5403
TCSETSF = 0x5404
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
FIONREAD = 0x541B

# poll event bits.
POLLIN = 0x1
POLLPRI = 0x2
POLLOUT = 0x4
POLLERR = 0x8
POLLHUP = 0x10
POLLNVAL = 0x20
POLLRDNORM = 0x40
POLLWRNORM = 0x100

# Path limits (include/uapi/linux/limits.h) and the symlink budget of namei.
PATH_MAX = 4096
NAME_MAX = 255
MAXSYMLINKS = 40


def makedev(major: int, minor: int) -> int:
    """Encode a device number the way Linux's new_encode_dev does."""
    return (
        (minor & 0xFF)
        | ((major & 0xFFF) << 8)
        | ((minor & 0xFFFFFF00) << 12)
        | ((major & 0xFFFFF000) << 32)
    )


def major(dev: int) -> int:
    """Major number of a Linux device number."""
    return ((dev >> 8) & 0xFFF) | ((dev >> 32) & 0xFFFFF000)


def minor(dev: int) -> int:
    """Minor number of a Linux device number."""
    return (dev & 0xFF) | ((dev >> 12) & 0xFFFFFF00)


# The dirfd value meaning "the current directory" in the *at calls.
AT_FDCWD = -100
