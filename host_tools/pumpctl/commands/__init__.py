"""One module per family of pumpctl commands; pumpctl.cli is the command table."""
