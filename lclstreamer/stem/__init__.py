"""4D-STEM on a stream: sector messages assembled into frames, electron-counted, and
written in stempy's sparse HDF5 format (docs/stem.md)."""
