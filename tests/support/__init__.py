"""Shared test helpers: free ports, supervised subprocesses, throwaway PKI."""
