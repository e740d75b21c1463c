"""Progress bars are drawn in a terminal only: in a log file or a pipe every redraw would stay."""

import fcntl
import os
import struct
import subprocess
import sys
import termios

from dml_bench.runtime.progress import interactive, progress_bar

SCRIPT = ("from dml_bench.runtime.progress import progress_bar\n"
          "for _ in progress_bar(range(50), desc='counting'): pass\n")


def run_script(stdout, stderr):
    subprocess.run([sys.executable, "-c", SCRIPT], stdout=stdout, stderr=stderr, check=True, timeout=120)


def terminal() -> tuple[int, int]:
    """A real pseudo-terminal (isatty() is true for both ends), 24 rows by 80 columns."""
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return primary, secondary


def read_all(fd) -> bytes:
    chunks = []
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):  # nothing more; a pty whose other end closed raises EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_no_bar_when_the_output_is_captured(tmp_path):
    assert not interactive()  # pytest captures stdout and stderr
    assert progress_bar(range(3)).disable
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        run_script(out, err)
    assert (tmp_path / "err").read_bytes() == b"" and (tmp_path / "out").read_bytes() == b""


def test_a_bar_in_a_terminal_and_none_when_only_one_stream_is_one():
    primary, secondary = terminal()
    try:
        run_script(secondary, secondary)
        assert b"counting" in read_all(primary)
        with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as pipe:
            run_script(pipe.stdin, secondary)  # stdout piped: the bar would end up in the capture
            pipe.stdin.close()
        assert b"counting" not in read_all(primary)
    finally:
        os.close(primary)
        os.close(secondary)


def test_disable_still_switches_a_bar_off_in_a_terminal(monkeypatch):
    primary, secondary = terminal()
    try:
        with open(secondary, "w", closefd=False) as stream:
            monkeypatch.setattr(sys, "stdout", stream)
            monkeypatch.setattr(sys, "stderr", stream)
            assert interactive() and not progress_bar(range(3)).disable
            assert progress_bar(range(3), disable=True).disable
    finally:
        os.close(primary)
        os.close(secondary)
