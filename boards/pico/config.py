# Board configuration of the Raspberry Pi Pico pump: which pins carry what,
# and the calibration of each part. Every peripheral is optional (None = not
# fitted) so a bare Pico on a desk runs the firmware; docs/wiring.md has the
# wiring of the bench prototype these defaults describe. pinmap.check()
# refuses a configuration the RP2040 cannot do (pin used twice, ADC on a
# non-ADC pin, two PWM outputs on one PWM slice).
#
# Pin numbers are GPIO numbers (GPn), not package pin numbers.

# -- motor: stepper driver (A4988, DRV8825 or TMC2209 in step/dir mode) ----
STEP_PIN = None  # bench prototype: 2
DIR_PIN = None  # bench prototype: 3
ENABLE_PIN = None  # bench prototype: 4 (driver EN, active low)
ENABLE_ACTIVE = 0  # level that energises the driver (all three: low)
DIR_FORWARD = 1  # DIR level that drives the pump forward; it never runs backward
STEP_HZ = 800  # step rate; 800 full steps/s is well inside a small NEMA-11's pull-in
STEPS_PER_STROKE = 200  # one cam revolution of a 1.8-degree motor = one 0.5 uL stroke

# -- stroke confirmation: one pulse (or N encoder pulses) per stroke ------
# None = no feedback sensor. Then every stroke FAILS confirmation (the pump
# cannot know it delivered), the stall interlock stops therapy with an alarm.
MOTOR_FEEDBACK = None  # bench prototype: 5 (slotted optical or hall sensor)
FEEDBACK_ACTIVE = 0  # level while the index is seen (open-collector sensors pull low)
FEEDBACK_PULL_UP = True  # open-collector output: the Pico's pull-up is the load
FEEDBACK_PULSES_PER_STROKE = 1  # a slotted disc with N slots: N

# Bench demo without feedback: only with MOTOR_FEEDBACK = None. Timed strokes
# then count as delivered although nothing confirms them. For a motor on a
# desk, never for anything that delivers liquid. The identify report and the
# board model show it ("BENCH DEMO, NO MOTOR FEEDBACK").
BENCH_DEMO_NO_FEEDBACK = False

# -- outputs ---------------------------------------------------------------
BUZZER_PIN = None  # bench prototype: 16 (piezo through a transistor)
LED_PIN = "LED"  # the Pico's own LED (GP25; on a Pico W the wireless chip's)

# -- analogue inputs (ADC pins GP26..GP29) ---------------------------------
ADC_VREF_MV = 3300  # ADC_VREF on the Pico: the 3.3 V rail through a filter
# Battery: the Pico measures VSYS/3 on GP29 itself, so a bare Pico reports a
# real supply voltage (about 4.7-5.0 V on USB). A Pico W cannot use GP29 for
# this while its wireless chip runs: give the divider another ADC pin there.
BATTERY_ADC = 29
BATTERY_RATIO_NUM = 3  # battery voltage = pin voltage * NUM / DEN
BATTERY_RATIO_DEN = 1
# Catheter pressure: a ratiometric 3.3 V gauge sensor, 0-5 psi (0-259 mmHg)
# over 10-90 % of the supply, read above the baseline it shows at rest.
PRESSURE_ADC = None  # bench prototype: 26
PRESSURE_ZERO_MV = 330  # output at 0 mmHg
PRESSURE_SPAN_MV = 2640  # output change over the span below
PRESSURE_SPAN_MMHG = 259
OCCLUSION_MMHG = 200  # above baseline: the catheter is blocked

# -- maintenance -----------------------------------------------------------
# The button that keeps the pump from taking over USB at boot, so mpremote can
# always reach the board: "BOOTSEL" (the Pico's own button: press it within
# BOOT_GRACE_MS after power-up; held AT power-up it starts the ROM
# bootloader instead) or a GPIO number (button to GND, held while powering up).
MAINTENANCE_BUTTON = "BOOTSEL"  # bench prototype: 15
# Time after boot before the pump takes the USB link: a Ctrl-C from mpremote
# (or a press of the maintenance button) in this window opens the REPL.
BOOT_GRACE_MS = 1500

# -- storage ---------------------------------------------------------------
# State and event log, in a folder at the rp2 port's littlefs root. Its name
# must not be a Python identifier: sys.path searches '' (the root) before
# /lib, so a folder /pump would be imported in place of /lib/pump.mpy and the
# pump would not boot. pinmap.check() refuses such a name.
FLASH_DIR = "/pump-data"
