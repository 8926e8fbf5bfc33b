"""The `ewfm` command-line interface (installed as the import package `ewfm_cli`)."""
