"""The feature cache (schema v1): one interface, Zarr and HDF5 backends, unit writers, readers."""
from .reader import CacheReader
from .schema import SCHEMA_VERSION, CacheError
from .writer import CachePlan, LabelTable, UnitRows

__all__ = ["CacheReader", "CacheError", "CachePlan", "LabelTable", "UnitRows", "SCHEMA_VERSION"]
