#!/usr/bin/env node
// An emulated Raspberry Pi Pico running the stock MicroPython rp2 firmware
// (rp2040js 1.4.1), with the pump's bench prototype (docs/wiring.md) on its
// pins. docs/rp2emu.md describes it; tools/rp2emu/picoemu.py starts it.
//
//   node rp2emu.mjs --firmware F.uf2 --bootrom B.bin --flash flash.img --bench bench.sock [--no-pace] [--button]
//
// USB CDC is this process's stdin (host -> Pico) and stdout (Pico -> host),
// raw bytes; picoemu.py relays them to a pseudo-terminal. The bench is JSON
// lines on a unix socket (one request, one reply). Log lines go to stderr.
//
// The five rp2040js 1.4.1 gaps of ../shared/rp2/README.md, closed here:
//  1. flash writes: IO_QSPI chip select and the SSI data register drive a
//     W25Q16JV model (program, erase, read, status, JEDEC and unique id);
//     every program and erase is written through to the flash image file at
//     once, so killing this process loses only the operation in flight;
//  2. USB CDC OUT: a read request is held until host data arrives, instead
//     of being answered with a zero-length packet every 10 us;
//  3. UART TX interrupt raised once per write to the data register;
//  4. watchdog and machine.reset(): the trigger stops the watchdog alarm and
//     the chip is rebuilt with the same flash, keeping the watchdog REASON
//     and SCRATCH registers (machine.reset_cause() is WDT_RESET);
//  5. idle pacing: while the core sleeps, emulated time never runs ahead of
//     the wall clock (unless --no-pace), so a host talking in real time sees
//     device timeouts in real time.
// And: pad pull-ups/pull-downs (and an output's own level) feed the input
// value of every pin the bench does not pull low.
import fs from 'node:fs';
import net from 'node:net';
import { RP2040, USBCDC, BasePeripheral, ConsoleLogger, LogLevel, GPIOPinState } from 'rp2040js';

// -- options ---------------------------------------------------------------
const argv = process.argv.slice(2);
function opt(name, fallback) {
  const i = argv.indexOf('--' + name);
  return i >= 0 ? argv[i + 1] : fallback;
}
const FIRMWARE = opt('firmware');
const BOOTROM = opt('bootrom');
const FLASH_FILE = opt('flash');
const BENCH_SOCK = opt('bench');
let pace = !argv.includes('--no-pace');
const UNIQUE_ID = Buffer.from(opt('unique-id', 'e6614c311b4a8f22'), 'hex');
if (!FIRMWARE || !BOOTROM || !FLASH_FILE) {
  process.stderr.write('usage: rp2emu.mjs --firmware F.uf2 --bootrom B.bin --flash flash.img [--bench S] [--no-pace]\n');
  process.exit(2);
}
function log(msg) {
  process.stderr.write(`rp2emu ${(nowNs() / 1e6).toFixed(1)} ms: ${msg}\n`);
}

// -- the bench prototype (docs/wiring.md, boards/pico/config.py) ------------
const PIN = { step: 2, dir: 3, enable: 4, index: 5, button: 15, buzzer: 16, led: 25 };
const ENABLE_ACTIVE = 0;
const DIR_FORWARD = 1;
const STEPS_PER_STROKE = Number(opt('steps-per-stroke', 200));
const INDEX_PULSE_NS = 1e6; // the slot passes the sensor in about 1 ms
const ADC_CH = { pressure: 0, battery: 1, vsys: 3 };
const bench = {
  battery_mv: 3600, // cell on a 1:1 divider (BATTERY_RATIO_NUM = 2) at GP27
  vsys_mv: 4950, // VSYS/3 on GP29
  pressure_mmhg: 0, // ratiometric 0-259 mmHg sensor at GP26: 330 mV + 2640 mV span
  bootsel: false,
  button: argv.includes('--button'), // the maintenance button held at power-up: the pump stays at the REPL
};
const faults = { stall: false, miss: 0, hang: false, flash_hang: false, hung_at_ms: null };
const motor = {
  steps: 0, // step pulses that turned the cam
  ignored_steps: 0, // step pulses with the driver disabled
  stalled_steps: 0, // step pulses while stalled
  position: 0, // steps into the current revolution
  revolutions: 0,
  index_pulses: 0,
  missed_pulses: 0,
  stray_pulses: 0,
  strokes: [], // {t_ms, steps, pulse}: the last revolutions
  running_since: null,
  first_step_due: false, // the driver was enabled: its next step pulse starts a stroke
  step_starts: [], // {t_ms, chip_ms}: the first step pulse after each enable (the motor starts)
};
const buzzer = { last_rise: null, period_ns: 0, edges: 0, tones: [] }; // tones: {from_ms, to_ms, hz, edges}
const led = { on: false, on_ns: 0, since: 0 };

// -- flash: a W25Q16JV on the QSPI bus --------------------------------------
const FLASH_SIZE = 2 * 1024 * 1024;
const FLASH = new Uint8Array(16 * 1024 * 1024).fill(0xff); // rp2040js maps 16 MiB; the chip has 2
let flashFd;
function openFlash() {
  if (!fs.existsSync(FLASH_FILE)) fs.writeFileSync(FLASH_FILE, Buffer.alloc(FLASH_SIZE, 0xff));
  flashFd = fs.openSync(FLASH_FILE, 'r+');
  const n = fs.readSync(flashFd, FLASH, 0, FLASH_SIZE, 0);
  if (n < FLASH_SIZE) FLASH.fill(0xff, n, FLASH_SIZE);
  // The firmware: UF2 blocks written where they go (as dragging the file onto
  // the Pico does), the filesystem area kept.
  const uf2 = fs.readFileSync(FIRMWARE);
  let lo = Infinity, hi = 0;
  for (let at = 0; at + 512 <= uf2.length; at += 512) {
    const b = uf2.subarray(at, at + 512);
    if (b.readUInt32LE(0) !== 0x0a324655 || b.readUInt32LE(4) !== 0x9e5d5157 || b.readUInt32LE(508) !== 0x0ab16f30) continue;
    if (b.readUInt32LE(8) & 1) continue; // not for the main flash
    const addr = b.readUInt32LE(12) - 0x10000000;
    const size = b.readUInt32LE(16);
    if (addr < 0 || addr + size > FLASH_SIZE) continue;
    FLASH.set(b.subarray(32, 32 + size), addr);
    lo = Math.min(lo, addr);
    hi = Math.max(hi, addr + size);
  }
  if (hi === 0) throw new Error(`${FIRMWARE}: no UF2 blocks for the RP2040's flash`);
  fs.writeSync(flashFd, FLASH, lo, hi - lo, lo);
}
function persist(addr, len) {
  fs.writeSync(flashFd, FLASH, addr, len, addr);
}

const HUNG_POLLS = 1000; // status polls of a hung flash before the core counts as stuck
const flashChip = {
  selected: false, cmd: -1, n: 0, addr: 0, wel: false, busy: false, page: null, hungPolls: 0, hungOp: '',
  programs: 0, erases: 0, bytes_programmed: 0,
  select() {
    this.selected = true;
    this.cmd = -1;
    this.n = 0;
    this.addr = 0;
    this.page = null;
  },
  deselect() {
    if (!this.selected) return;
    this.selected = false;
    const c = this.cmd;
    if (c === 0x06) this.wel = true;
    else if (c === 0x04) this.wel = false;
    else if (c === 0x01 || c === 0x31) this.wel = false; // status writes: nothing to keep
    else if ((c === 0x02 || c === 0x20 || c === 0x52 || c === 0xd8 || c === 0xc7 || c === 0x60) && this.wel && !this.busy) {
      this.wel = false;
      if (faults.flash_hang) {
        this.busy = true; // never finishes: the core spins on the status register
        this.hungPolls = 0;
        this.hungOp = c === 0x02 ? 'page program' : 'erase';
        faults.hung_at_ms = nowNs() / 1e6;
        return;
      }
      if (c === 0x02 && this.page && this.n >= 4) this.program();
      else if (c !== 0x02 && (this.n >= 4 || c === 0xc7 || c === 0x60)) this.erase(c);
    }
  },
  program() {
    const base = this.addr & ~0xff;
    for (const [off, v] of this.page) FLASH[base + off] &= v; // programming only clears bits
    persist(base, 256);
    this.programs++;
    this.bytes_programmed += this.page.size;
  },
  erase(c) {
    const size = c === 0x20 ? 4096 : c === 0x52 ? 32768 : c === 0xd8 ? 65536 : FLASH_SIZE;
    const base = (c === 0xc7 || c === 0x60) ? 0 : this.addr & ~(size - 1);
    FLASH.fill(0xff, base, base + size);
    persist(base, size);
    this.erases++;
  },
  xfer(v) {
    if (!this.selected) return 0xff;
    const i = this.n++;
    if (i === 0) {
      this.cmd = v;
      return 0xff;
    }
    const c = this.cmd;
    switch (c) {
      case 0x05:
        if (this.busy && faults.flash_hang && ++this.hungPolls === HUNG_POLLS) {
          // The core spins on the busy bit with interrupts off (the SDK's
          // flash routines): only the watchdog ends that loop. Its instructions
          // change nothing, so emulated time skips ahead instead of running them.
          faults.hang = true;
          log(`flash: the core spins on a hung ${this.hungOp} (fault): skipping ahead to the watchdog`);
        }
        return (this.busy ? 1 : 0) | (this.wel ? 2 : 0);
      case 0x35: return 0x02; // QE set: boot2 leaves the status alone
      case 0x15: return 0x00;
      case 0x9f: return [0xef, 0x40, 0x15][i - 1] ?? 0xff; // Winbond W25Q16JV
      case 0x4b: return i >= 5 && i < 13 ? UNIQUE_ID[i - 5] : 0xff;
      case 0x03: case 0x0b: case 0x02: case 0x20: case 0x52: case 0xd8: {
        if (i <= 3) {
          this.addr = ((this.addr << 8) | v) & (FLASH_SIZE - 1);
          return 0xff;
        }
        if (c === 0x03 || c === 0x0b) {
          const skip = c === 0x0b ? 5 : 4; // fast read: one dummy byte
          return i < skip ? 0xff : FLASH[(this.addr + i - skip) & (FLASH_SIZE - 1)];
        }
        if (c === 0x02) {
          if (!this.page) this.page = new Map();
          this.page.set((this.addr + i - 4) & 0xff, v); // wraps within the page, as the chip does
        }
        return 0xff;
      }
      default: return 0xff;
    }
  },
};

// SSI (XIP_SSI at 0x18000000): the data register talks to the flash model.
function patchSSI(chip) {
  const ssi = chip.peripherals[0x18000];
  const rx = [];
  let auto = false; // a transfer with hardware chip select (boot2), not forced by IO_QSPI
  const read = ssi.readUint32.bind(ssi);
  const write = ssi.writeUint32.bind(ssi);
  ssi.readUint32 = (offset) => {
    switch (offset) {
      case 0x20: return 0; // TXFLR: bytes leave at once
      case 0x24: return rx.length; // RXFLR
      case 0x28: return 0x6 | (rx.length ? 0x8 : 0); // SR: TFNF, TFE, RFNE; never busy
      case 0x60: { // DR0
        const v = rx.length ? rx.shift() : 0;
        if (auto && !rx.length) {
          flashChip.deselect();
          auto = false;
        }
        return v;
      }
    }
    return read(offset);
  };
  ssi.writeUint32 = (offset, value) => {
    if (offset === 0x60) {
      if (!ssi.ssienr) return;
      if (!flashChip.selected && qspi.csMode === 'auto') {
        flashChip.select();
        auto = true;
      }
      if (rx.length < 16) rx.push(flashChip.xfer(value & 0xff));
      return;
    }
    if (offset === 0x08 && !(value & 1)) { // SSIENR off: FIFOs cleared
      rx.length = 0;
      if (auto) {
        flashChip.deselect();
        auto = false;
      }
    }
    write(offset, value);
  };
}

// IO_QSPI: the chip select's output override is how the boot ROM and the SDK
// frame flash commands; SD1's input override is the ROM's "aborted" flag.
const qspi = { csMode: 'auto' };
class IOQSPI extends BasePeripheral {
  constructor(chip, name) {
    super(chip, name);
    this.ctrl = new Uint32Array(6);
  }
  readUint32(offset) {
    const pin = offset >> 3;
    if (pin < 6) return offset & 4 ? this.ctrl[pin] : 0;
    return 0; // interrupt registers: none used
  }
  writeUint32(offset, value) {
    const pin = offset >> 3;
    if (pin >= 6 || !(offset & 4)) return;
    this.ctrl[pin] = value;
    if (pin === 1) { // SS
      const over = (value >> 8) & 3;
      if (over === 2) {
        qspi.csMode = 'forced';
        if (!flashChip.selected) flashChip.select();
      } else if (over === 3) {
        qspi.csMode = 'forced';
        flashChip.deselect();
      } else {
        qspi.csMode = 'auto';
      }
    }
  }
}

// VREG_AND_CHIP_RESET: CHIP_RESET tells a power-on from a watchdog reset.
class VregChipReset extends BasePeripheral {
  constructor(chip, name, powerOn) {
    super(chip, name);
    this.regs = [0xb1, 0x91, powerOn ? 1 << 8 : 0]; // VREG, BOD, CHIP_RESET (HAD_POR)
  }
  readUint32(offset) {
    return this.regs[offset >> 2] ?? 0;
  }
  writeUint32(offset, value) {
    if (offset < 8) this.regs[offset >> 2] = value;
  }
}

// UART: TX interrupt once per byte written, not on every interrupt check.
const uartTx = [[], []]; // bytes the board wrote to UART0 / UART1 (the last 1000 each)
function patchUART(chip) {
  for (const [i, uart] of chip.uart.entries()) {
    uart.onByte = (b) => {
      uartTx[i].push(b);
      if (uartTx[i].length > 1000) uartTx[i].shift();
    };
    uart.checkInterrupts = function () {
      this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask));
    };
    const write = uart.writeUint32.bind(uart);
    uart.writeUint32 = (offset, value) => {
      write(offset, value);
      if (offset === 0) {
        uart.interruptStatus |= 1 << 5;
        uart.checkInterrupts();
      }
    };
  }
}

// -- the chip ----------------------------------------------------------------
const bootrom = (() => {
  const b = fs.readFileSync(BOOTROM);
  return new Uint32Array(b.buffer, b.byteOffset, b.length >> 2);
})();
let chip = null;
let cdc = null;
let baseNs = 0; // emulated time of earlier chips (resets)
let boots = 0;
const resets = []; // {t_ms, cause}
let pendingReset = null;
let watchdogState = null; // REASON and SCRATCH kept across a watchdog reset
const hostLow = new Array(30).fill(false); // pins the bench pulls low
const usb = { connected: false, queue: [], pending: -1, rx_bytes: 0, tx_bytes: 0, first_rx_ns: 0, last_tx_ns: 0 };
const cpu = { busy_ns: 0, idle_ns: 0 };
const wdt = { last_feed_ns: null, first_feed_chip_ns: null };

function nowNs() {
  return baseNs + (chip ? chip.clock.nanos : 0);
}

function buildChip(powerOn) {
  if (chip) baseNs += chip.clock.nanos;
  chip = new RP2040();
  chip.logger = new ConsoleLogger(LogLevel.Error, true);
  chip.loadBootrom(bootrom);
  chip.flash = FLASH; // one flash, kept across resets
  chip.flash16 = new Uint16Array(FLASH.buffer);
  chip.flashView = new DataView(FLASH.buffer);
  chip.peripherals[0x40018] = new IOQSPI(chip, 'IO_QSPI_BASE');
  chip.peripherals[0x40064] = new VregChipReset(chip, 'VREG_AND_CHIP_RESET_BASE', powerOn);
  qspi.csMode = 'auto';
  flashChip.selected = false;
  flashChip.busy = false;
  flashChip.wel = false;
  patchSSI(chip);
  patchUART(chip);
  const wd = chip.peripherals[0x40058];
  if (!powerOn && watchdogState) {
    wd.reason = watchdogState.reason;
    wd.scratchData.set(watchdogState.scratch);
  }
  const wdWrite = wd.writeUint32.bind(wd);
  wd.writeUint32 = (offset, value) => {
    if (offset === 0x04) { // LOAD: machine.WDT() and its feed()
      wdt.last_feed_ns = nowNs();
      if (wdt.first_feed_chip_ns === null) wdt.first_feed_chip_ns = chip.clock.nanos; // started
    }
    wdWrite(offset, value);
  };
  wdt.last_feed_ns = null;
  wdt.first_feed_chip_ns = null;
  wd.onWatchdogTrigger = () => {
    wd.alarm.enable = false;
    wd.timer.enable = false;
    watchdogState = { reason: wd.reason, scratch: Uint32Array.from(wd.scratchData) };
    if (!pendingReset) {
      pendingReset = { cause: wd.reason & 2 ? 'watchdog (forced: machine.reset)' : 'watchdog',
                       last_feed_ms: wdt.last_feed_ns === null ? null : wdt.last_feed_ns / 1e6 };
    }
  };
  hostLow[PIN.index] = false; // an index pulse cut short by the reset ends with it
  // QSPI pads: input enabled, so the BOOTSEL read sees the button.
  for (const p of chip.qspi) p.padValue |= 0x40;
  chip.qspi[1].setInputValue(!bench.bootsel);
  wirePins();
  setAdc();
  startUSB();
  faults.hang = false; // a reset ends a hang; the hung flash recovers with it
  faults.flash_hang = false;
  motor.running_since = null; // the cam stays where it stopped: it is mechanical
  motor.first_step_due = false;
  buzzer.last_rise = null;
  led.on = false;
  boots++;
  chip.core.PC = 0x10000000; // boot2 in flash, as rp2040js's MicroPython demo starts
}

function startUSB() {
  cdc = new USBCDC(chip.usbCtrl);
  usb.connected = false;
  usb.pending = -1;
  usb.queue = []; // bytes in flight when the board reset are lost, as on a real bus
  cdc.onDeviceConnected = () => {
    usb.connected = true;
    feedUSB();
  };
  cdc.onSerialData = (buf) => {
    usb.tx_bytes += buf.length;
    usb.last_tx_ns = nowNs();
    process.stdout.write(Buffer.from(buf));
  };
  chip.usbCtrl.onEndpointRead = (endpoint, size) => {
    if (endpoint !== cdc.outEndpoint) return;
    usb.pending = size; // held until the host sends something (gap 2)
    feedUSB();
  };
}

function feedUSB() {
  if (usb.pending < 0 || !usb.queue.length || cdc.outEndpoint < 0) return;
  const n = Math.min(usb.pending, usb.queue.length);
  const data = Uint8Array.from(usb.queue.splice(0, n));
  usb.pending = -1;
  chip.usbCtrl.endpointReadDone(cdc.outEndpoint, data);
}

function hostSends(buf) {
  if (!usb.queue.length) usb.first_rx_ns = nowNs();
  for (const b of buf) usb.queue.push(b);
  usb.rx_bytes += buf.length;
  feedUSB();
  wake();
}

// -- pins --------------------------------------------------------------------
function settle(n) {
  // The level an input reads: pulled low by the bench, else the pin's own
  // output, else its pad pull (a floating input reads 0).
  const p = chip.gpio[n];
  if (hostLow[n]) return p.setInputValue(false);
  const v = p.value;
  const level = v === GPIOPinState.High || v === GPIOPinState.InputPullUp ||
    (v === GPIOPinState.InputBusKeeper && p.rawInputValue);
  if (level !== p.rawInputValue) p.setInputValue(level);
}

function pullLow(n, low) {
  hostLow[n] = low;
  settle(n);
}

function wirePins() {
  for (let n = 0; n < 30; n++) {
    const p = chip.gpio[n];
    p.addListener((value, last) => {
      settle(n);
      if (n === PIN.step && value === GPIOPinState.High && last !== GPIOPinState.High) onStep();
      else if (n === PIN.buzzer && value === GPIOPinState.High && last !== GPIOPinState.High) onBuzzerEdge();
      else if (n === PIN.led) onLed(value === GPIOPinState.High);
      else if (n === PIN.enable) {
        motor.running_since = driverOn() ? nowNs() : null;
        motor.first_step_due = driverOn();
      }
    });
    settle(n);
  }
  pullLow(PIN.button, bench.button);
}

function driverOn() {
  return chip.gpio[PIN.enable].value === (ENABLE_ACTIVE ? GPIOPinState.High : GPIOPinState.Low);
}

function onStep() {
  if (!driverOn()) {
    motor.ignored_steps++;
    return;
  }
  if (motor.first_step_due) { // step pulses begin: when the stroke started, as the pin shows it
    motor.first_step_due = false;
    motor.step_starts.push({ t_ms: nowNs() / 1e6, chip_ms: chip.clock.nanos / 1e6 });
    if (motor.step_starts.length > 200) motor.step_starts.shift();
  }
  if (chip.gpio[PIN.dir].value !== (DIR_FORWARD ? GPIOPinState.High : GPIOPinState.Low)) {
    motor.ignored_steps++; // the mechanism has a one-way clutch
    return;
  }
  if (faults.stall) {
    motor.stalled_steps++;
    return;
  }
  motor.steps++;
  motor.position++;
  if (motor.position >= STEPS_PER_STROKE) {
    motor.position = 0;
    motor.revolutions++;
    let pulse = true;
    if (faults.miss > 0) {
      faults.miss--;
      motor.missed_pulses++;
      pulse = false;
    }
    motor.strokes.push({ t_ms: nowNs() / 1e6, pulse });
    if (motor.strokes.length > 200) motor.strokes.shift();
    if (pulse) indexPulse();
  }
}

function indexPulse() {
  motor.index_pulses++;
  pullLow(PIN.index, true);
  const c = chip;
  const alarm = c.clock.createAlarm(() => {
    if (c === chip) pullLow(PIN.index, false);
  });
  alarm.schedule(INDEX_PULSE_NS);
}

function onBuzzerEdge() {
  const t = nowNs();
  buzzer.edges++;
  if (buzzer.last_rise !== null) {
    const period = t - buzzer.last_rise;
    const hz = 1e9 / period;
    const cur = buzzer.tones[buzzer.tones.length - 1];
    if (cur && Math.abs(cur.hz - hz) / cur.hz < 0.02 && t / 1e6 - cur.to_ms < 20) {
      cur.to_ms = t / 1e6;
      cur.edges++;
      cur.hz += (hz - cur.hz) / cur.edges; // running mean of the period's frequency
    } else {
      buzzer.tones.push({ from_ms: buzzer.last_rise / 1e6, to_ms: t / 1e6, hz, edges: 1 });
      if (buzzer.tones.length > 500) buzzer.tones.shift();
    }
    buzzer.period_ns = period;
  }
  buzzer.last_rise = t;
}

function buzzerNow() {
  const t = nowNs();
  const cur = buzzer.tones[buzzer.tones.length - 1];
  const sounding = !!(buzzer.last_rise !== null && cur && t - buzzer.last_rise < Math.max(3 * buzzer.period_ns, 5e6));
  return { sounding, hz: sounding ? Math.round(cur.hz * 10) / 10 : 0, edges: buzzer.edges };
}

function onLed(on) {
  const t = nowNs();
  if (led.on) led.on_ns += t - led.since;
  led.on = on;
  led.since = t;
}

function setAdc() {
  if (!chip) return;
  const code = (mv) => Math.max(0, Math.min(4095, Math.round(mv * 4095 / 3300)));
  const pressureMv = bench.pressure_mv ?? 330 + bench.pressure_mmhg * 2640 / 259;
  chip.adc.channelValues[ADC_CH.pressure] = code(pressureMv);
  chip.adc.channelValues[ADC_CH.battery] = code(bench.battery_mv / 2);
  chip.adc.channelValues[ADC_CH.vsys] = code(bench.vsys_mv / 3);
}

// -- running -------------------------------------------------------------------
// Emulated time runs as fast as the host CPU allows while the core works;
// while it sleeps (WFI/WFE) time jumps to the next event, with pacing no
// further than the wall clock (and it is never allowed to lag more than
// MAX_LAG behind: a slow stretch is not caught up by racing through idle time).
const CYCLE_NS = 8; // 125 MHz
const MAX_LAG_NS = 20e6;
// Short waits (a USB transfer completes 10 us after it starts) must not cost
// a wall-clock timer each: a wait up to SHORT_NS goes at once, as long as it
// puts emulated time no more than MAX_LEAD_NS ahead of the wall clock.
const SHORT_NS = 100e3;
const MAX_LEAD_NS = 2e6;
let wallAnchor = process.hrtime.bigint();
let emuAnchor = 0;
let timer = null;
let quitting = false;

function wallTarget() {
  const wall = Number(process.hrtime.bigint() - wallAnchor);
  const target = emuAnchor + wall;
  const now = nowNs();
  if (target - now > MAX_LAG_NS) { // lagging: re-anchor instead of racing
    emuAnchor = now + MAX_LAG_NS - wall;
    return now + MAX_LAG_NS;
  }
  return target;
}

function wake() {
  if (timer && !quitting) {
    clearTimeout(timer);
    timer = null;
    setImmediate(run);
  }
}

function run() {
  timer = null;
  if (quitting) return;
  const deadline = performance.now() + 8;
  let delay = -1;
  for (let i = 0; ; i++) {
    if (pendingReset) {
      const { cause, last_feed_ms } = pendingReset;
      pendingReset = null;
      resets.push({ t_ms: nowNs() / 1e6, cause, last_feed_ms });
      log(`reset: ${cause}`);
      buildChip(false);
      continue;
    }
    const core = chip.core;
    const clock = chip.clock;
    if (faults.hang || core.waiting) {
      // Asleep (or hung): time moves to the next event, paced to the wall.
      const next = clock.nextAlarm ? clock.nanosToNextAlarm : Infinity;
      let step = next;
      if (pace && !faults.hang) {
        const target = wallTarget();
        const now = nowNs();
        if (step > SHORT_NS || now + step > target + MAX_LEAD_NS) {
          const room = target - now;
          if (room <= 0) { delay = 1; break; }
          if (step > room) step = room;
        }
      }
      if (step === Infinity) { delay = 5; break; } // nothing will happen until the host speaks
      clock.tick(step);
      if (!faults.hang) cpu.idle_ns += step;
    } else {
      const cycles = core.executeInstruction();
      clock.tick(cycles * CYCLE_NS);
      cpu.busy_ns += cycles * CYCLE_NS;
    }
    if ((i & 1023) === 0 && performance.now() > deadline) break;
  }
  if (delay >= 0) timer = setTimeout(run, delay);
  else setImmediate(run);
}

// -- the bench port -------------------------------------------------------------
function state() {
  const t = nowNs();
  return {
    t_ms: t / 1e6,
    chip_ms: chip.clock.nanos / 1e6,
    boots,
    resets,
    pace,
    wdt: (() => { const wd = chip.peripherals[0x40058]; return { enabled: !!wd.enable, reason: wd.reason,
      last_feed_ms: wdt.last_feed_ns === null ? null : wdt.last_feed_ns / 1e6,
      started_chip_ms: wdt.first_feed_chip_ns === null ? null : wdt.first_feed_chip_ns / 1e6 }; })(),
    cpu: { busy_ms: cpu.busy_ns / 1e6, idle_ms: cpu.idle_ns / 1e6 },
    usb: { connected: usb.connected, rx_bytes: usb.rx_bytes, tx_bytes: usb.tx_bytes,
           first_rx_ms: usb.first_rx_ns / 1e6, last_tx_ms: usb.last_tx_ns / 1e6 },
    motor: {
      steps: motor.steps, ignored_steps: motor.ignored_steps, stalled_steps: motor.stalled_steps,
      position: motor.position, revolutions: motor.revolutions, index_pulses: motor.index_pulses,
      missed_pulses: motor.missed_pulses, stray_pulses: motor.stray_pulses,
      enabled: driverOn(), dir: chip.gpio[PIN.dir].value === GPIOPinState.High ? 1 : 0,
      strokes: motor.strokes.slice(-50),
      step_starts: motor.step_starts.slice(-100),
    },
    buzzer: { ...buzzerNow(), tones: buzzer.tones.slice(-100) },
    led: { on: led.on, on_ms: (led.on_ns + (led.on ? t - led.since : 0)) / 1e6 },
    bench: { ...bench },
    faults: { ...faults },
    uart: uartTx.map((bytes) => Buffer.from(bytes).toString('latin1')),
    flash: { programs: flashChip.programs, erases: flashChip.erases, bytes_programmed: flashChip.bytes_programmed },
  };
}

function command(req) {
  switch (req.cmd) {
    case 'state':
      return state();
    case 'set':
      for (const k of ['battery_mv', 'vsys_mv', 'pressure_mmhg', 'pressure_mv']) if (k in req) bench[k] = req[k];
      setAdc();
      return { ok: true };
    case 'button':
      if ('bootsel' in req) {
        bench.bootsel = !!req.bootsel;
        chip.qspi[1].setInputValue(!bench.bootsel);
      }
      if ('maintenance' in req) {
        bench.button = !!req.maintenance;
        pullLow(PIN.button, bench.button);
      }
      return { ok: true };
    case 'fault':
      if ('stall' in req) faults.stall = !!req.stall;
      if ('miss' in req) faults.miss = req.miss | 0;
      if ('flash_hang' in req) faults.flash_hang = !!req.flash_hang;
      if (req.hang) { // the core stops until the next reset
        faults.hang = true;
        faults.hung_at_ms = nowNs() / 1e6;
      }
      if (req.stray) { // the cam turns a revolution with no step command: an index pulse
        motor.stray_pulses++;
        indexPulse();
      }
      wake();
      return { ok: true, faults: { ...faults } };
    case 'pace':
      pace = !!req.on;
      wallAnchor = process.hrtime.bigint();
      emuAnchor = nowNs();
      wake();
      return { ok: true, pace };
    case 'clear':
      motor.strokes = [];
      motor.step_starts = [];
      buzzer.tones = [];
      return { ok: true };
    case 'power_cycle':
      pendingReset = { cause: 'power cycle' };
      watchdogState = null;
      wake();
      return { ok: true };
    case 'quit':
      setImmediate(quit);
      return { ok: true };
    default:
      return { error: `unknown command ${req.cmd}` };
  }
}

function serveBench() {
  if (!BENCH_SOCK) return;
  try { fs.unlinkSync(BENCH_SOCK); } catch { /* none */ }
  const server = net.createServer((sock) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let reply;
        try { reply = command(JSON.parse(line)); } catch (e) { reply = { error: String(e) }; }
        reply.t_ms ??= nowNs() / 1e6;
        sock.write(JSON.stringify(reply) + '\n');
      }
    });
    sock.on('error', () => {});
  });
  server.listen(BENCH_SOCK);
}

function quit() {
  if (quitting) return;
  quitting = true;
  try { fs.closeSync(flashFd); } catch { /* closed */ }
  try { if (BENCH_SOCK) fs.unlinkSync(BENCH_SOCK); } catch { /* gone */ }
  process.exit(0);
}

openFlash();
buildChip(true);
serveBench();
process.stdin.on('data', hostSends);
process.stdin.on('end', quit);
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
process.stdout.on('error', quit);
log(`booting ${FIRMWARE} (flash image ${FLASH_FILE}${pace ? '' : ', not paced'})`);
setImmediate(run);
