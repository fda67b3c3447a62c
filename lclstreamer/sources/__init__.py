"""Event sources: where events come from (synthetic, HDF5 files, psana)."""
