"""Stand-in for Colab's `google.colab` package (tests only; see tests/colab_runtime/README.md)."""
