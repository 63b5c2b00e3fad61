"""Entry points: one Blueprint per trigger family. Parse, call one service, respond."""
