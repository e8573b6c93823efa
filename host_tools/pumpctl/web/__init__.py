"""`pumpctl web`: the programmer and the patient handset in a browser (docs/web.md)."""
