"""pumpctl: virtual clinician programmer and emulator launcher."""
