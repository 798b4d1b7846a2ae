"""One module per tab of the app. Each builds its tab inside the current gr.Blocks, registers
its own events and returns a small dataclass of what app.py wires across tabs."""
