# Checks a board configuration against what the RP2040 can do, before any
# pin is touched: a wrong pin map must stop the boot with a clear message,
# never drive a motor from a pin that is also a sensor input.
from micropython import const

from analog import RAW_MAX, SAMPLES

GPIO_MAX = const(29)  # GP0..GP29 on the RP2040 and the RP2350A
ADC_FIRST = const(26)  # ADC0..ADC3 are GP26..GP29
ADC_LAST = const(29)
_PWM_SLICES = const(8)
_SMALL_INT_MAX = const((1 << 30) - 1)  # beyond this an int allocates on the RP2040


def pwm_slice(gpio):
    # GPn drives PWM slice (n / 2) mod 8, channel A or B: both channels of a
    # slice share one frequency, so two PWM outputs need two slices.
    return (gpio >> 1) % _PWM_SLICES


def _pins(cfg):
    # Every fitted GPIO with its role.
    roles = (("STEP_PIN", cfg.STEP_PIN), ("DIR_PIN", cfg.DIR_PIN), ("ENABLE_PIN", cfg.ENABLE_PIN),
             ("MOTOR_FEEDBACK", cfg.MOTOR_FEEDBACK), ("BUZZER_PIN", cfg.BUZZER_PIN),
             ("LED_PIN", cfg.LED_PIN), ("BATTERY_ADC", cfg.BATTERY_ADC), ("PRESSURE_ADC", cfg.PRESSURE_ADC),
             ("MAINTENANCE_BUTTON", cfg.MAINTENANCE_BUTTON))
    # "LED" and "BOOTSEL" are named board resources, not GPIO numbers.
    return [(name, pin) for name, pin in roles if isinstance(pin, int)]


def check(cfg):
    # Raises ValueError naming the first problem.
    used = {}
    for name, pin in _pins(cfg):
        if not 0 <= pin <= GPIO_MAX:
            raise ValueError("config: %s = %d is not a GPIO (GP0..GP%d)" % (name, pin, GPIO_MAX))
        if pin in used:
            raise ValueError("config: GP%d is both %s and %s" % (pin, used[pin], name))
        used[pin] = name
    for name in ("BATTERY_ADC", "PRESSURE_ADC"):
        pin = getattr(cfg, name)
        if pin is not None and not ADC_FIRST <= pin <= ADC_LAST:
            raise ValueError("config: %s = GP%d has no ADC (GP%d..GP%d)" % (name, pin, ADC_FIRST, ADC_LAST))
    _check_pwm(cfg)
    _check_feedback(cfg)
    _check_scaling(cfg)
    problem = flash_dir_problem(cfg.FLASH_DIR)
    if problem:
        raise ValueError("config: FLASH_DIR %r: %s" % (cfg.FLASH_DIR, problem))


def flash_dir_problem(path):
    # The rp2 port imports from '' (the littlefs root) before /lib: a folder
    # at the root named like a module shadows /lib/<name>.mpy. None if fine.
    top = path.strip("/").split("/")[0]
    if not top:
        return "the state needs a folder of its own"
    if _identifier(top):
        return ("a folder %r at the flash root shadows any module %s (sys.path searches the root before /lib): "
                "use a name that is no Python identifier, e.g. '/pump-data'" % (top, top))
    return None


def _identifier(name):
    for i, c in enumerate(name):
        if not (c == "_" or c.isalpha() or (i and c.isdigit())):
            return False
    return True


def _check_pwm(cfg):
    if cfg.STEP_PIN is not None and cfg.BUZZER_PIN is not None \
            and pwm_slice(cfg.STEP_PIN) == pwm_slice(cfg.BUZZER_PIN):
        raise ValueError("config: STEP_PIN GP%d and BUZZER_PIN GP%d share PWM slice %d (one frequency)"
                         % (cfg.STEP_PIN, cfg.BUZZER_PIN, pwm_slice(cfg.STEP_PIN)))
    if cfg.STEP_PIN is not None and not cfg.STEP_HZ > 0:
        raise ValueError("config: STEP_HZ must be positive")


def _check_feedback(cfg):
    if cfg.BENCH_DEMO_NO_FEEDBACK and cfg.MOTOR_FEEDBACK is not None:
        raise ValueError("config: BENCH_DEMO_NO_FEEDBACK is only for a board without MOTOR_FEEDBACK")
    if cfg.FEEDBACK_PULSES_PER_STROKE < 1 or cfg.STEPS_PER_STROKE < 1:
        raise ValueError("config: FEEDBACK_PULSES_PER_STROKE and STEPS_PER_STROKE must be at least 1")


def _check_scaling(cfg):
    # The sensor arithmetic stays in small ints (no allocation, no floats).
    if RAW_MAX * SAMPLES * cfg.ADC_VREF_MV > _SMALL_INT_MAX or cfg.ADC_VREF_MV * cfg.BATTERY_RATIO_NUM > _SMALL_INT_MAX:
        raise ValueError("config: ADC_VREF_MV or BATTERY_RATIO_NUM too large for integer scaling")
    if cfg.ADC_VREF_MV * cfg.PRESSURE_SPAN_MMHG > _SMALL_INT_MAX or cfg.PRESSURE_SPAN_MV <= 0:
        raise ValueError("config: pressure span out of range")
    if cfg.BATTERY_RATIO_DEN <= 0:
        raise ValueError("config: BATTERY_RATIO_DEN must be positive")
