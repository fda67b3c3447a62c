"""Upstream lclstreamer configuration files, mapped onto our native configuration.

Upstream (slac-lcls/lclstreamer) has two layouts:

* the current one, with `type: <UpstreamName>` in every section (as ours, other names);
* the older one, with a top-level `lclstreamer:` section naming the type of each section,
  and each section a mapping `{<UpstreamName>: {parameters}}`.

`to_native` turns either into the native form with the same meaning, table-driven: each
upstream type name maps to a native `type` and a function renaming its parameters. What
has no equivalent is a located error. `is_upstream` tells the two families apart. Pure:
no I/O, nothing imported but the models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from . import models as m

Loc = tuple[str | int, ...]


class UpstreamError(ValueError):
    """An upstream entry with no native equivalent, at `loc` in the upstream file."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


@dataclass
class Mapped:
    """The native document, where each native path came from, and what was changed."""

    data: dict[str, Any]
    #: native path prefix -> upstream path prefix (longest prefix wins)
    origin: dict[Loc, Loc] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def upstream_path(self, path: Loc) -> Loc:
        """The place in the upstream file a native path came from."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.origin:
                return (*self.origin[path[:cut]], *path[cut:])
        return path


Params = dict[str, Any]
Convert = Callable[[Params, "_Ctx"], Params]


@dataclass
class _Ctx:
    """What a converter may read besides its own parameters, and where to report."""

    loc: Loc
    top: Params
    notes: list[str]
    #: native parameter (or path under the entry) -> upstream parameter it came from
    renames: dict[str | tuple[str, ...], str] = field(default_factory=dict)

    def rename(self, params: Params, old: str, new: str) -> None:
        """Rename a parameter (an error about `new`, even its absence, names `old`)."""
        if old in params:
            params[new] = params.pop(old)
        self.renames[new] = old

    def note(self, text: str) -> None:
        self.notes.append(f"{_dotted(self.loc)}: {text}")


# ---------------------------------------------------------------------------
# Converters: upstream parameters -> native parameters (without `type`)
# ---------------------------------------------------------------------------


def _same(p: Params, ctx: _Ctx) -> Params:
    return p


def _generated_events(count_key: str) -> Convert:
    def conv(p: Params, ctx: _Ctx) -> Params:
        ctx.rename(p, count_key, "number_of_events")
        return {"detectors": {}, **p}

    return conv


_PSANA_ID = re.compile(r"(?:^|[:,])\s*(exp|run|dir)\s*=\s*([^:,\s]+)")

#: upstream psana2 `source_identifier` keys (comma-separated) -> native event_source keys
_PSANA2_KEYS = {
    "exp": "experiment",
    "run": "run",
    "dir": "directory",
    "files": "files",
    "max_events": "max_events",
    "batch_size": "batch_size",
}
_PSANA2_INTS = ("run", "max_events", "batch_size")


def _psana2_identifier(ident: Any) -> Params:
    """Upstream psana2's `source_identifier` (`exp=E,run=R`, `files=F`, `max_events=M`,
    `batch_size=B`, comma-separated, or a mapping) as native event_source keys."""
    loc: Loc = ("source_identifier",)
    if isinstance(ident, Mapping):
        items = [(str(k), str(v)) for k, v in ident.items()]
    else:
        items = []
        for part in str(ident or "").split(","):
            key, eq, value = part.strip().partition("=")
            if part.strip() and not eq:
                raise UpstreamError(loc, f"{part.strip()!r} is not key=value")
            if part.strip():
                items.append((key.strip(), value.strip()))
    out: Params = {}
    for key, value in items:
        if key == "shmem":
            raise UpstreamError(loc, "psana shared-memory sources (shmem) are not supported")
        if key not in _PSANA2_KEYS:
            raise UpstreamError(
                loc,
                f"{key}= has no equivalent in the psana2 event source "
                f"(supported: {', '.join(k + '=' for k in _PSANA2_KEYS)})",
            )
        if key in _PSANA2_INTS:
            if not value.isdigit():
                raise UpstreamError(loc, f"{key}={value!r} is not a whole number")
            out[_PSANA2_KEYS[key]] = int(value)
        else:
            out[_PSANA2_KEYS[key]] = value
    if "files" in out and ("experiment" in out or "run" in out):
        raise UpstreamError(loc, "give files= or exp= and run=, not both")
    if "files" not in out and ("experiment" not in out or "run" not in out):
        raise UpstreamError(
            loc,
            "the Psana2EventSource event source needs source_identifier "
            f"'exp=<experiment>,run=<number>' or 'files=<xtc2 file>', got {ident!r}",
        )
    return out


def _psana_source(kind: str) -> Convert:
    """Upstream psana sources take the run (or, psana2, the files) from `source_identifier`."""

    def conv(p: Params, ctx: _Ctx) -> Params:
        ident = ctx.top.get("source_identifier")
        if kind == "Psana2EventSource":
            return {**_psana2_identifier(ident), **p}
        if isinstance(ident, Mapping):
            parts = {k: str(v) for k, v in ident.items()}
        else:
            text = str(ident or "")
            if "shmem" in text:
                raise UpstreamError(
                    ("source_identifier",), "psana shared-memory sources (shmem) are not supported"
                )
            parts = dict(_PSANA_ID.findall(text))
        if "exp" not in parts or "run" not in parts or not parts["run"].isdigit():
            raise UpstreamError(
                ("source_identifier",),
                f"the {kind} event source needs source_identifier "
                f"'exp=<experiment>:run=<number>', got {ident!r}",
            )
        out: Params = {"experiment": parts["exp"], "run": int(parts["run"]), **p}
        if "dir" in parts:
            out["directory"] = parts["dir"]
        return out

    return conv


def _shape(value: Any, loc: Loc) -> Any:
    """Upstream's `array_shape` ("6,3" or 6 or [6, 3]) as a list of ints."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        try:
            return [int(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise UpstreamError(loc, f"array_shape {value!r} is not 'n,n,...'") from None
    return value


def _random_array(p: Params, ctx: _Ctx) -> Params:
    shape = _shape(p.pop("array_shape", None), (*ctx.loc, "array_shape"))
    if shape is not None:
        p["shape"] = shape
        ctx.renames["shape"] = "array_shape"
    ctx.rename(p, "array_dtype", "dtype")
    return p


def _value(dtype: str) -> Convert:
    def conv(p: Params, ctx: _Ctx) -> Params:
        return {**p, "dtype": dtype}

    return conv


_DETECTOR_FIELDS = {
    "calib": "calib",
    "raw": "raw",
    "image": "image",
    "raw.calib": "calib",
    "raw.raw": "raw",
    "raw.image": "image",
}


def _detector_interface(psana2: bool) -> Convert:
    """psana_name + psana_fields: a detector representation (psana1, psana2), any dotted
    field or list of fields (psana2), or, without fields, an EPICS PV (a name with `:`)."""

    def conv(p: Params, ctx: _Ctx) -> Params:
        name = p.pop("psana_name", None)
        fields = p.pop("psana_fields", None)
        ctx.renames["source"] = "psana_name"
        if psana2:
            p.setdefault("dtype", "float64")  # upstream casts every value, default float64
        if fields is None:
            if ":" not in str(name):
                raise UpstreamError(
                    (*ctx.loc, "psana_fields"),
                    f"psana_fields is needed: {name!r} is not an EPICS PV (no ':' in its name)",
                )
            return {"type": "scalar", "source": name, **p}
        kind = _DETECTOR_FIELDS.get(fields) if isinstance(fields, str) else None
        if kind is not None:
            ctx.renames["kind"] = "psana_fields"
            return {"source": name, "kind": kind, **p}
        if not psana2:
            raise UpstreamError(
                (*ctx.loc, "psana_fields"),
                f"psana_fields {fields!r} is not supported here (supported: "
                f"{', '.join(_DETECTOR_FIELDS)})",
            )
        ctx.renames["field"] = "psana_fields"
        return {"source": name, "field": fields, **p}

    return conv


def _run_info(p: Params, ctx: _Ctx) -> Params:
    ctx.note(
        "one value per event (run_info key: run); upstream gives four strings "
        "[experiment, run start timestamp, run number, source_identifier]: add run_info "
        "data sources with key experiment and timestamp, and a source_identifier one"
    )
    return {"key": "run", **p}


def _area_detector(assembled: bool) -> Convert:
    def conv(p: Params, ctx: _Ctx) -> Params:
        ctx.rename(p, "psana_name", "source")
        calibrated = p.pop("calibration", True)
        kind = "image" if assembled else ("calib" if calibrated else "raw")
        return {**p, "kind": kind}

    return conv


def _pv(p: Params, ctx: _Ctx) -> Params:
    ctx.rename(p, "psana_name", "source")
    return p


def _batch(p: Params, ctx: _Ctx) -> Params:
    if "batch_size" not in p and "batch_size" in ctx.top:
        p["batch_size"] = ctx.top["batch_size"]  # the older layout kept it in `lclstreamer:`
    return p


_IMAGE_TYPES = {
    "Psana1AreaDetector",
    "Psana2AreaDetector",
    "Psana2AssembledAreaDetector",
    "Psana1DetectorInterface",
    "Psana2DetectorInterface",
}


def _images(ctx: _Ctx) -> list[str]:
    """Data sources that may hold a 2-D image: random arrays of two dimensions, and psana
    detectors read with psana_fields."""
    sources = ctx.top.get("data_sources")
    out = []
    for name, ds in (sources or {}).items() if isinstance(sources, Mapping) else ():
        if not isinstance(ds, Mapping):
            continue
        kind = ds.get("type")
        if kind == "GenericRandomNumpyArray":
            shape = _shape(ds.get("array_shape"), ("data_sources", name, "array_shape"))
            if isinstance(shape, list) and len(shape) == 2:
                out.append(name)
        elif kind in _IMAGE_TYPES and (ds.get("psana_fields") or "Area" in kind):
            out.append(name)
    return out


def _peaknet(p: Params, ctx: _Ctx) -> Params:
    """Upstream pads every 2-D data source; native peaknet pads one `field`."""
    p = _batch(p, ctx)
    if "field" not in p:
        images = _images(ctx)
        if len(images) != 1:
            raise UpstreamError(
                (*ctx.loc, "type"),
                "upstream pads every 2-D data source, the native peaknet pipeline one: "
                f"add `field: <data source>` (image sources here: {', '.join(images) or 'none'})",
            )
        p["field"] = images[0]
        ctx.note(f"pads data source {images[0]!r} (field), the one image source")
    style = p.get("pad_style")
    if style == "bottom-right":
        p["pad_style"] = "bottom_right"
    p.setdefault("add_channel_dim", True)  # upstream's default
    return p


def _all_fields(ctx: _Ctx) -> dict[str, str]:
    """Every data source, under its own name (upstream serializes every field)."""
    sources = ctx.top.get("data_sources")
    return {str(n): str(n) for n in sources} if isinstance(sources, Mapping) else {}


def _msgpack(p: Params, ctx: _Ctx) -> Params:
    if "fields" not in p:
        p["fields"] = _all_fields(ctx)
    ctx.note(
        "one msgpack map per event, arrays as CrystFEL reads them ({type, shape, data}); "
        "upstream packs the pipeline's output with msgpack-numpy"
    )
    return p


def _numpy(p: Params, ctx: _Ctx) -> Params:
    compress = p.pop("use_compression", False)
    if not isinstance(compress, bool):
        raise UpstreamError((*ctx.loc, "use_compression"), f"{compress!r} is not true or false")
    p["compression"] = "zstd" if compress else "none"
    ctx.renames["compression"] = "use_compression"
    if "fields" not in p:
        p["fields"] = _all_fields(ctx)
    ctx.note(
        "native numpy messages are a JSON header and the raw arrays (zstd when "
        "use_compression), not upstream's .npz (zip) files"
    )
    return p


_SIMPLON_START = ("polarization_fraction", "polarization_axis", "data_collection_rate")


def _simplon(p: Params, ctx: _Ctx) -> Params:
    """Upstream's start-message metadata goes to the native start message's user_data."""
    start = {key: p.pop(key) for key in _SIMPLON_START if key in p}
    if start:
        p["start_user_data"] = {**start, **p.get("start_user_data", {})}
        for key in start:
            ctx.renames[("start_user_data", key)] = key
        ctx.note(f"{', '.join(start)}: in the start message's user_data (Stream V2 has no field)")
    ctx.rename(p, "data_source_to_serialize", "image")
    name, kind = p.pop("detector_name", None), p.pop("detector_type", None)
    if name is not None or kind is not None:
        p["detector_description"] = " ".join(str(x) for x in (kind, name) if x is not None)
        ctx.renames["detector_description"] = "detector_type" if kind else "detector_name"
    return p


def _no_op(p: Params, ctx: _Ctx) -> Params:
    size = ctx.top.get("batch_size", 1)
    ctx.note(f"no processing; events batched by lclstreamer.batch_size ({size})")
    return {**p, "batch_size": size}


_HDF5_COMPRESSION = {
    None: "none",
    "gzip": "gzip",
    "gzip_with_shuffle": "gzip_with_shuffle",
    "bitshuffle_with_lz4": "bitshuffle_lz4",
    "bitshuffle_with_zstd": "bitshuffle_zstd",
    "zfp": "zfp",
}


def _hdf5(p: Params, ctx: _Ctx) -> Params:
    comp = p.get("compression")
    if comp not in _HDF5_COMPRESSION:
        raise UpstreamError(
            (*ctx.loc, "compression"),
            f"compression {comp!r} is not an upstream choice "
            f"({', '.join(str(k) for k in _HDF5_COMPRESSION)})",
        )
    p["compression"] = _HDF5_COMPRESSION[comp]
    level = p.get("compression_level")
    if p["compression"] in ("none", "bitshuffle_lz4", "zfp") and "compression_level" in p:
        # upstream ignores the level for these (its zfp is the plugin default, lossless)
        del p["compression_level"]
        ctx.note(f"compression_level {level} has no effect with {comp or 'no compression'}")
    if p["compression"] == "zfp":
        p["zfp_mode"] = "reversible"
        ctx.note("zfp as upstream uses it: lossless (zfp_mode: reversible)")
    return p


def _file_handler(p: Params, ctx: _Ctx) -> Params:
    ctx.rename(p, "write_directory", "directory")
    p.setdefault("directory", ".")  # upstream's default: the working directory
    prefix = p.pop("file_prefix", "")
    if prefix:
        p["prefix"] = prefix
        ctx.renames["prefix"] = "file_prefix"
    suffix = p.pop("file_suffix", None)
    if suffix is not None:
        ctx.note(f"file_suffix {suffix!r}: files are named by the serializer (.h5 for hdf5)")
    return p


def _streaming_handler(p: Params, ctx: _Ctx) -> Params:
    """Upstream's defaults changed: its current models require `distribute` and `buffer`
    and default to role client, library zmq; the older ones to server and nng."""
    current = "distribute" in p or "buffer" in p
    role = p.pop("role", "client" if current else "server")
    library = p.pop("library", "zmq" if current else "nng")
    socket = p.pop("socket_type", "push")
    native = f"{library}_{socket}"
    if role not in ("server", "client"):
        raise UpstreamError((*ctx.loc, "role"), f"role {role!r} is not server or client")
    if library not in ("nng", "zmq"):
        raise UpstreamError((*ctx.loc, "library"), f"library {library!r} is not zmq or nng")
    if native not in ("nng_push", "zmq_push", "zmq_pub", "zmq_rep"):
        raise UpstreamError(
            (*ctx.loc, "socket_type"),
            f"{library} socket_type {socket!r} is not supported (nng: push; zmq: push, pub, rep)",
        )
    buffer = p.pop("buffer", 0)
    if buffer != 0:
        raise UpstreamError(
            (*ctx.loc, "buffer"), f"buffer {buffer!r}: only 0 (the OS default) has an equivalent"
        )
    if "linger" in p:
        linger = p["linger"]
        if not isinstance(linger, int | float) or linger < 0:
            raise UpstreamError(
                (*ctx.loc, "linger"),
                f"linger {linger!r}: give milliseconds >= 0 (waiting forever has no equivalent)",
            )
        p["linger"] = linger / 1000  # upstream: milliseconds (ZeroMQ's unit); ours: seconds
    mode = "listen" if role == "server" else "dial"
    if native == "zmq_rep":
        urls = p.pop("urls", None)
        if not isinstance(urls, list) or len(urls) != 1:
            raise UpstreamError((*ctx.loc, "urls"), "socket_type rep takes exactly one url")
        if role != "server" or "distribute" in p:
            where = "role" if role != "server" else "distribute"
            raise UpstreamError(
                (*ctx.loc, where), "socket_type rep: rank 0 binds the one url (role: server)"
            )
        ctx.renames["url"] = "urls"
        return {"type": native, "url": urls[0], **p}
    return {"type": native, **p, "mode": mode}


@dataclass(frozen=True)
class Entry:
    """One upstream type name: the native type and how its parameters map."""

    native: str
    convert: Convert = _same


#: section -> upstream type name -> native entry
TABLE: dict[str, dict[str, Entry]] = {
    "event_source": {
        "InternalEventSource": Entry(
            "synthetic", _generated_events("number_of_events_to_generate")
        ),
        "GenericEventSource": Entry("synthetic", _generated_events("events")),
        "Psana1EventSource": Entry("psana1", _psana_source("Psana1EventSource")),
        "Psana2EventSource": Entry("psana2", _psana_source("Psana2EventSource")),
    },
    "data_sources": {
        "GenericRandomNumpyArray": Entry("random_array", _random_array),
        "GenericRandomTimestamp": Entry("timestamp"),
        "GenericRandomWavelength": Entry("wavelength"),
        "IntValue": Entry("constant", _value("int64")),
        "FloatValue": Entry("constant", _value("float64")),
        "SourceIdentifier": Entry("source_identifier"),
        "Psana1Timestamp": Entry("timestamp"),
        "Psana2Timestamp": Entry("timestamp"),
        "Psana1DetectorInterface": Entry("detector", _detector_interface(psana2=False)),
        "Psana2DetectorInterface": Entry("detector", _detector_interface(psana2=True)),
        "Psana1AreaDetector": Entry("detector", _area_detector(assembled=False)),
        "Psana2AreaDetector": Entry("detector", _area_detector(assembled=False)),
        "Psana2AssembledAreaDetector": Entry("detector", _area_detector(assembled=True)),
        "Psana1PV": Entry("scalar", _pv),
        "Psana2PV": Entry("scalar", _pv),
        "Psana2RunInfo": Entry("run_info", _run_info),
    },
    "processing_pipeline": {
        "BatchProcessingPipeline": Entry("batch", _batch),
        "BatchPipeline": Entry("batch", _batch),
        "NoOpProcessingPipeline": Entry("batch", _no_op),
        "PeaknetPreprocessingPipeline": Entry("peaknet", _peaknet),
    },
    "data_serializer": {
        "HDF5BinarySerializer": Entry("hdf5", _hdf5),
        "Hdf5BinarySerializer": Entry("hdf5", _hdf5),
        "Hdf5Serializer": Entry("hdf5", _hdf5),
        "SimplonBinarySerializer": Entry("simplon", _simplon),
        "MsgpackBinarySerializer": Entry("msgpack", _msgpack),
        "NumpyBinarySerializer": Entry("numpy", _numpy),
    },
    "data_handlers": {
        "BinaryFileWritingDataHandler": Entry("file", _file_handler),
        "BinaryDataStreamingDataHandler": Entry("(by library and socket_type)", _streaming_handler),
    },
}

#: section -> the native union its `type` selects among
_UNIONS = {
    "event_source": m.EventSourceConfig,
    "data_sources": m.DataSourceConfig,
    "processing_pipeline": m.ProcessingPipelineConfig,
    "data_serializer": m.SerializerConfig,
    "data_handlers": m.DataHandlerConfig,
}


def native_types(section: str) -> frozenset[str]:
    """The `type` values this build's models accept in a section."""
    union = get_args(_UNIONS[section])[0]
    members = get_args(union) or (union,)
    return frozenset(get_args(c.model_fields["type"].annotation)[0] for c in members)


def _all_upstream_names() -> frozenset[str]:
    return frozenset(name for section in TABLE.values() for name in section)


def _entries(data: Mapping[str, Any]) -> list[Any]:
    """Every section entry of a document in the current layout (whatever their shape)."""
    out = [data.get(k) for k in ("event_source", "processing_pipeline", "data_serializer")]
    sources, handlers = data.get("data_sources"), data.get("data_handlers")
    out += list(sources.values()) if isinstance(sources, Mapping) else []
    out += handlers if isinstance(handlers, list) else []
    return out


def is_upstream(data: Any) -> bool:
    """True for either upstream layout: an `lclstreamer:` section or upstream type names."""
    if not isinstance(data, Mapping):
        return False
    if "lclstreamer" in data:
        return True
    names = _all_upstream_names()
    return any(isinstance(e, Mapping) and e.get("type") in names for e in _entries(data))


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _older_layout(
    data: Mapping[str, Any], notes: list[str]
) -> tuple[dict[str, Any], dict[Loc, Loc]]:
    """The older layout (an `lclstreamer:` section naming each type) as the current one."""
    top = data["lclstreamer"]
    if not isinstance(top, Mapping):
        raise UpstreamError(("lclstreamer",), "must be a mapping naming each section's type")
    out: dict[str, Any] = {k: v for k, v in data.items() if k not in _UNIONS and k != "lclstreamer"}
    where: dict[Loc, Loc] = {}
    for key in ("source_identifier", "skip_incomplete_events", "batch_size"):
        if key in top:
            out[key] = top[key]
            where[(key,)] = ("lclstreamer", key)
    out["data_sources"] = data.get("data_sources")
    for section in ("event_source", "processing_pipeline", "data_serializer"):
        chosen = top.get(section)
        if chosen is None:
            if section == "processing_pipeline":
                continue
            raise UpstreamError(("lclstreamer", section), f"names no {section}")
        block = data.get(section)
        if not isinstance(block, Mapping) or chosen not in block:
            raise UpstreamError(
                (section,), f"no configuration for {chosen!r} (named in lclstreamer.{section})"
            )
        out[section] = {"type": chosen, **(block[chosen] or {})}
        where[(section,)] = (section, chosen)
    handlers = top.get("data_handlers") or []
    block = data.get("data_handlers") or {}
    unused = [name for name in block if name not in handlers] if isinstance(block, Mapping) else []
    if unused:
        notes.append(
            f"data_handlers: {', '.join(unused)} not named in lclstreamer.data_handlers, "
            "so not built (as upstream)"
        )
    out["data_handlers"] = []
    for i, chosen in enumerate(handlers):
        if not isinstance(block, Mapping) or chosen not in block:
            raise UpstreamError(
                ("lclstreamer", "data_handlers", i),
                f"no configuration for data handler {chosen!r} in data_handlers",
            )
        out["data_handlers"].append({"type": chosen, **(block[chosen] or {})})
        where[("data_handlers", len(out["data_handlers"]) - 1)] = ("data_handlers", chosen)
    return out, where


def _convert(section: str, block: Any, here: Loc, loc: Loc, top: Params, mapped: Mapped) -> Any:
    """One section entry at native path `here` and upstream path `loc`, upstream -> native
    (native entries pass through unchanged)."""
    mapped.origin[here] = loc
    if not isinstance(block, Mapping):
        return block
    name = block.get("type")
    entry = TABLE[section].get(name) if isinstance(name, str) else None
    if entry is None:
        return dict(block)  # a native entry, or an error the native validation will locate
    ctx = _Ctx(loc, top, mapped.notes)
    params = {k: v for k, v in block.items() if k != "type"}
    out = entry.convert(params, ctx)
    native = out.pop("type", entry.native)
    if native not in native_types(section):
        raise UpstreamError(
            (*loc, "type"),
            f"upstream type {name!r} (native {native!r}) is not supported by this lclstreamer",
        )
    for new, old in ctx.renames.items():
        mapped.origin[(*here, *((new,) if isinstance(new, str) else new))] = (*loc, old)
    return {"type": native, **out}


def to_native(data: Mapping[str, Any]) -> Mapped:
    """Map an upstream configuration (either layout) onto the native one, or raise
    UpstreamError located in the upstream file."""
    mapped = Mapped({})
    if "lclstreamer" in data:
        doc, where = _older_layout(data, mapped.notes)
        mapped.notes.append("older upstream layout (an `lclstreamer:` section) read")
    else:
        doc, where = dict(data), {}
    mapped.origin.update(where)  # scalar keys moved out of `lclstreamer:`
    top: Params = dict(doc)
    ident = doc.get("source_identifier")
    if isinstance(ident, Mapping):
        doc["source_identifier"] = ",".join(f"{k}={v}" for k, v in ident.items())
    batch = doc.pop("batch_size", None)
    if batch is not None and "processing_pipeline" not in doc:
        doc["processing_pipeline"] = {"type": "batch", "batch_size": batch}
    try:
        mapped.data = _sections(doc, where, top, mapped)
    except UpstreamError as exc:
        if len(exc.loc) == 1 and exc.loc in where:  # a key the older layout keeps in `lclstreamer:`
            exc.loc = where[exc.loc]
        raise
    return mapped


def _sections(
    doc: dict[str, Any], where: dict[Loc, Loc], top: Params, mapped: Mapped
) -> dict[str, Any]:
    """Every section of `doc` (current layout) converted to native."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        loc: Loc = where.get((key,), (key,))
        if key in ("event_source", "processing_pipeline", "data_serializer"):
            out[key] = _convert(key, value, (key,), loc, top, mapped)
        elif key == "data_sources" and isinstance(value, Mapping):
            out[key] = {
                n: _convert(key, v, (key, n), (key, n), top, mapped) for n, v in value.items()
            }
        elif key == "data_handlers" and isinstance(value, list):
            out[key] = [
                _convert(key, h, (key, i), where.get((key, i), (key, i)), top, mapped)
                for i, h in enumerate(value)
            ]
        else:
            out[key] = value
    return out
