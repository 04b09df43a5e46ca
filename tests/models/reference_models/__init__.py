"""The original model code of released backbones, vendored so that tests/models/test_release_files.py
can build each model as its authors did, offline (see README.md for sources and changes)."""
