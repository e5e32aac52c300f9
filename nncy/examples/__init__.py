"""Small runnable examples: ``python -m nncy.examples.digits``."""
