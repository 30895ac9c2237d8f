"""Read PyTorch `.pth` files without torch and without running code from them.

A `.pth` is a pickle whose tensors point into raw storages: in a zip archive
(`<name>/data.pkl` + `<name>/data/<key>`, torch >= 1.6) or, in the legacy format of older
files (pytorch-fid's `pt_inception-2015-12-05` was written by torch 1.1), a sequence of
pickles followed by the raw storages. This reader unpickles with an allow-list: containers
(`collections.OrderedDict`), torch's tensor-rebuild functions and its storage types, each
rebuilt here as NumPy. Any other global (a class, a function, `os.system`, ...) is refused
with `UnsafePickleError` before anything from the file is called.
"""

import collections
import io
import pickle
import struct
import zipfile
from typing import Any, Callable, Dict

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage type name -> NumPy dtype
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
  """The file asks for a global outside the allow-list; nothing from it was run."""


class _StorageType:
  def __init__(self, name: str):
    if _STORAGES.get(name) is None:
      raise UnsafePickleError(f"tensor storage type torch.{name} is not supported.")
    self.name, self.dtype = name, np.dtype(_STORAGES[name])


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2 as NumPy: a strided view of the storage, copied."""
  del unused
  flat = storage
  if not size:
    return flat[offset].copy() if flat.size else np.zeros((), flat.dtype)
  itemsize = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
  del requires_grad, backward_hooks, unused
  return data


_ALLOWED: Dict[tuple, Callable] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, load_storage: Callable, allowed: Dict[tuple, Callable] = None):
    super().__init__(file)
    self._load_storage = load_storage
    self._allowed = _ALLOWED if allowed is None else allowed

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGES:
      return _StorageType(name)
    if (module, name) in self._allowed:
      return self._allowed[(module, name)]
    raise UnsafePickleError(
        f"the file asks for {module}.{name}, which a tensor file does not need; refusing to "
        "load it (only tensors, containers and numbers are read).")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise UnsafePickleError(f"unexpected persistent id {pid!r} in the file.")
    return self._load_storage(pid)


def _no_storage(pid):
  raise UnsafePickleError(f"unexpected persistent id {pid!r} in the file's header.")


def _storage_dtype(storage_type) -> np.dtype:
  if not isinstance(storage_type, _StorageType):
    raise UnsafePickleError(f"storage of unknown type {storage_type!r}.")
  return storage_type.dtype


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if len(pkl) != 1:
      raise ValueError(f"{path} is a zip without exactly one data.pkl; not a torch file.")
    prefix = pkl[0][:-len("data.pkl")]
    cache = {}

    def load_storage(pid):
      _, storage_type, key, _location, numel = pid
      dtype = _storage_dtype(storage_type)
      if key not in cache:
        raw = z.read(f"{prefix}data/{key}")
        cache[key] = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))[:numel]
      return cache[key]

    return _Unpickler(io.BytesIO(z.read(pkl[0])), load_storage).load()


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    return load_legacy_stream(f, path)


def load_legacy_stream(f, name: str) -> Any:
  """The legacy format from an open binary stream (`name` for messages). Legacy files
  pickle the object before the bytes of its storages: tensors are rebuilt once the storages
  have been read; a storage pickled on its own comes back as a flat array."""

  def lazy_tensor(storage, *args):
    return _LazyTensor(storage, args)

  allowed = dict(_ALLOWED)
  allowed[("torch._utils", "_rebuild_tensor_v2")] = lazy_tensor
  allowed[("torch._utils", "_rebuild_tensor")] = lazy_tensor
  plain = lambda: _Unpickler(f, _no_storage, {}).load()  # numbers and strings only
  magic = plain()
  if magic != _LEGACY_MAGIC:
    raise ValueError(f"{name} is neither a torch zip file nor a legacy torch file.")
  protocol = plain()
  if protocol != _LEGACY_PROTOCOL:
    raise ValueError(f"{name}: legacy torch protocol {protocol}; expected 1001.")
  plain()  # sys_info: a dict of numbers and strings
  pending = {}

  def load_storage(pid):
    # ('storage', storage_type, root_key, location, numel, view_metadata)
    _, storage_type, key, _location, numel = pid[:5]
    if len(pid) > 5 and pid[5] is not None:
      raise UnsafePickleError("storage views of the oldest torch files are not supported.")
    entry = pending.setdefault(key, {"dtype": _storage_dtype(storage_type), "data": None})
    return _LazyStorage(entry, numel)

  obj = _Unpickler(f, load_storage, allowed).load()
  keys = plain()
  for key in keys:
    (numel,) = struct.unpack("<q", f.read(8))
    dtype = pending[key]["dtype"]
    raw = f.read(numel * dtype.itemsize)
    if len(raw) != numel * dtype.itemsize:
      raise EOFError(f"storage {key} is cut short")
    pending[key]["data"] = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
  return _resolve(obj)


class _LazyStorage:
  """A legacy-format storage whose bytes come after the object pickle."""

  def __init__(self, entry, numel):
    self.entry, self.numel = entry, numel


class _LazyTensor:
  def __init__(self, storage, args):
    self.storage, self.args = storage, args


def _resolve(obj):
  if isinstance(obj, _LazyStorage):
    return obj.entry["data"][:obj.numel]
  if isinstance(obj, _LazyTensor):
    if not isinstance(obj.storage, _LazyStorage):
      raise UnsafePickleError("a tensor without a storage of this file.")
    return _rebuild_tensor(obj.storage.entry["data"], *obj.args)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v) for v in obj)
  return obj


def load(path: str) -> Any:
  """The object in a torch `.pth` file, tensors as NumPy arrays (C order, own memory).

  Raises:
    UnsafePickleError: the file needs a global outside the allow-list (nothing was run).
    ValueError: not a torch file (neither format), or truncated.
  """
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path)
    return _load_legacy(path)
  except UnsafePickleError:
    raise
  except (pickle.UnpicklingError, EOFError, struct.error, KeyError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable torch file ({type(e).__name__}: {e}).") from e
