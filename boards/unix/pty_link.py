# Programmer link of the emulated board: the master side of a pseudo-terminal
# created by the host launcher (the unix port cannot open one itself) and
# passed in as an inherited file descriptor.
import select


class PtyLink:
    def __init__(self, fd, poller):
        self.stream = open(fd, "r+b")
        self.rx = bytearray(512)
        poller.register(self.stream, select.POLLIN)

    def read(self):
        # Number of bytes now in self.rx (call when poll reports the link
        # readable). The fd is non-blocking: readinto gives what is there.
        return self.stream.readinto(self.rx) or 0

    def write(self, data):
        self.stream.write(data)
