"""psik-api: the REST service over psik (run under certified's mTLS server)."""
