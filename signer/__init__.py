"""signer: issues user certificates from the UNIX login (SO_PEERCRED), with a SQLite ledger."""
