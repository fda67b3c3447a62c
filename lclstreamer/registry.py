"""Which implementation serves each `type` of each configuration section."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import datasources
from .errors import ConfigError
from .handlers.simple import FileHandler, NullHandler
from .handlers.sockets import NNGPushHandler, ZMQPushHandler
from .handlers.zmq_serve import ZMQPubHandler, ZMQRepHandler
from .pipeline import BatchPipeline
from .pipelines.peakfinder import PeakFinderPipeline
from .pipelines.peaknet import PeaknetPipeline
from .pipelines.tof import TofPipeline
from .serializers.hdf5 import HDF5Serializer
from .serializers.msgpack import MsgpackSerializer
from .serializers.numpy import NumpySerializer
from .serializers.simplon import SimplonSerializer
from .serializers.stem import StemSectorSerializer
from .sources.hdf5watch import hdf5_source
from .sources.psana1 import Psana1Source
from .sources.psana2 import Psana2Source
from .sources.stem import StemSectorSource
from .sources.synthetic import SyntheticSource
from .sources.tof import SyntheticTofSource

Factory = Callable[..., Any]

EVENT_SOURCES: Mapping[str, Factory] = {
    "synthetic": SyntheticSource,
    "hdf5": hdf5_source,
    "psana1": Psana1Source,
    "psana2": Psana2Source,
    "synthetic_tof": SyntheticTofSource,
    "stem_sectors": StemSectorSource,
}

DATA_SOURCES: Mapping[str, Factory] = {
    "detector": datasources.detector,
    "scalar": datasources.scalar,
    "timestamp": datasources.timestamp,
    "photon_energy": datasources.photon_energy,
    "wavelength": datasources.wavelength,
    "event_index": datasources.event_index,
    "event_codes": datasources.event_codes,
    "constant": datasources.constant,
    "random_array": datasources.random_array,
    "source_identifier": datasources.source_identifier,
    "run_info": datasources.run_info,
}

PIPELINES: Mapping[str, Factory] = {
    "batch": BatchPipeline,
    "peak_finder": PeakFinderPipeline,
    "tof": TofPipeline,
    "peaknet": PeaknetPipeline,
}

SERIALIZERS: Mapping[str, Factory] = {
    "hdf5": HDF5Serializer,
    "msgpack": MsgpackSerializer,
    "simplon": SimplonSerializer,
    "numpy": NumpySerializer,
    "stem_sector": StemSectorSerializer,
}

DATA_HANDLERS: Mapping[str, Factory] = {
    "file": FileHandler,
    "nng_push": NNGPushHandler,
    "zmq_push": ZMQPushHandler,
    "null": NullHandler,
    "zmq_rep": ZMQRepHandler,
    "zmq_pub": ZMQPubHandler,
}

LAYERS: Mapping[str, Mapping[str, Factory]] = {
    "event_source": EVENT_SOURCES,
    "data_sources": DATA_SOURCES,
    "processing_pipeline": PIPELINES,
    "data_serializer": SERIALIZERS,
    "data_handlers": DATA_HANDLERS,
}


def build(layer: str, cfg: Any, *args: Any) -> Any:
    """Instantiate the implementation of `cfg.type` for a layer: factory(cfg, *args)."""
    table = LAYERS[layer]
    factory = table.get(cfg.type)
    if factory is None:
        known = ", ".join(sorted(table))
        raise ConfigError(f"{layer}: no implementation of type {cfg.type!r} (known: {known})")
    return factory(cfg, *args)
