"""lclstreamer: a YAML-configured MPI engine that streams X-ray detector events.

event source -> data sources -> processing pipeline -> serializer -> data handlers.
Importing the package (or `lclstreamer.models`) does not initialise MPI.
"""

__version__ = "0.1.0"
