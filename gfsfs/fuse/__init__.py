"""The FUSE driver: pyfuse3 ``Operations`` translating POSIX calls into
client calls (and every error into one errno), and the mount program."""
