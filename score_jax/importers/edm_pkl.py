"""EDM's `network-snapshot-*.pkl` -> Flax, without running anything from the file.

A snapshot is `pickle.dump(dict(ema=net, loss_fn=..., augment_pipe=..., dataset_kwargs=...))`
where every network class is a `torch_utils.persistence` class: each module is pickled as a
call `_reconstruct_persistent_obj(meta)` whose meta holds the class name, its constructor
kwargs, its state and the full source code of `training/networks.py` (which the official
loader exec()s). Here an allow-list unpickler maps that call to an inert record (the source
is kept as text and never run), tensors to NumPy (torch's legacy storage bytes parsed by
`torch_pickle`), numbers and containers to themselves, and refuses every other global. The
network is then rebuilt from the recorded class name and kwargs (`models.edm.build`) and its
state dict renamed onto the Flax tree.
"""

import io
import json
import pickle
import struct
from typing import Any, Dict, Tuple

import jax
import numpy as np
from flax import traverse_util

from score_jax.importers import torch_pickle
from score_jax.importers.torch_pickle import UnsafePickleError

PRECOND_CLASSES = {"VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm",
                   "EDMPrecond": "edm"}
# Every class the official training code pickles (persistence records bare class names);
# anything else is refused.
KNOWN_CLASSES = {*PRECOND_CLASSES, "SongUNet", "DhariwalUNet", "UNetBlock", "Conv2d", "Linear",
                 "GroupNorm", "PositionalEmbedding", "FourierEmbedding", "VPLoss", "VELoss",
                 "EDMLoss", "AugmentPipe"}
# The preconditioners' own kwargs (the rest go to the inner network).
PRECOND_KWARGS = {"vp": ("beta_d", "beta_min", "M", "epsilon_t"),
                  "ve": ("sigma_min", "sigma_max"), "iddpm": ("C_1", "C_2", "M"),
                  "edm": ("sigma_min", "sigma_max", "sigma_data")}


class PersistentRecord:
  """What `_reconstruct_persistent_obj(meta)` stands for: the class name, the state (module
  __dict__) and the embedded source, which is never executed."""

  def __init__(self, meta):
    if not isinstance(meta, dict) or "class_name" not in meta or "state" not in meta:
      raise UnsafePickleError("a persistent object without class_name and state.")
    self.class_name = meta["class_name"]
    if self.class_name not in KNOWN_CLASSES:
      raise UnsafePickleError(f"the snapshot holds an object of class {self.class_name!r}, "
                              "which is not one of EDM's networks, losses or augment pipes.")
    self.state = meta["state"]
    self.module_src = meta.get("module_src")

  @property
  def init_kwargs(self) -> dict:
    return dict(self.state.get("_init_kwargs", {}))


class _ModuleDict:
  """torch.nn.ModuleDict: only its state (the `_modules` of its children) is kept."""

  def __setstate__(self, state):
    self.state = state


def _numpy_scalar(dtype, data):
  if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
    raise UnsafePickleError("numpy scalar with an unexpected payload.")
  return np.frombuffer(data, dtype)[0].item()


def _load_from_bytes(data):
  if not isinstance(data, bytes):
    raise UnsafePickleError("torch.storage._load_from_bytes without bytes.")
  return torch_pickle.load_legacy_stream(io.BytesIO(data), "an embedded storage")


_ALLOWED = {
    **torch_pickle._ALLOWED,  # pylint: disable=protected-access
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("torch.nn.modules.container", "ModuleDict"): _ModuleDict,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}


class _Unpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise UnsafePickleError(
        f"the snapshot asks for {module}.{name}, which an EDM snapshot does not need; "
        "refusing to load it (nothing from the file was run).")

  def persistent_load(self, pid):
    raise UnsafePickleError(f"unexpected persistent id {pid!r} in the snapshot.")


def read_snapshot(path: str) -> Dict[str, Any]:
  """The snapshot's dict (ema, loss_fn, augment_pipe, dataset_kwargs) with records for the
  modules and NumPy arrays for tensors.

  Raises:
    UnsafePickleError: a global outside the allow-list or an unknown class (nothing ran).
    ValueError: a truncated or otherwise unreadable file.
  """
  try:
    with open(path, "rb") as f:
      obj = _Unpickler(f).load()
  except UnsafePickleError:
    raise
  except (pickle.UnpicklingError, EOFError, struct.error, KeyError, TypeError,
          IndexError) as e:
    raise ValueError(f"{path} is not a readable EDM snapshot ({type(e).__name__}: {e}); a "
                     "truncated download?") from e
  if not isinstance(obj, dict) or not isinstance(obj.get("ema"), PersistentRecord):
    raise ValueError(f"{path} holds no 'ema' network; expected an EDM network-snapshot-*.pkl.")
  return obj


def state_dict(record) -> Dict[str, np.ndarray]:
  """torch's state_dict() of a module record: _parameters, then persistent _buffers, then
  the children's, depth first (same keys and order)."""
  out = {}

  def visit(node, prefix):
    st = node.state
    for name, value in (st.get("_parameters") or {}).items():
      if value is not None:
        out[prefix + name] = np.asarray(value)
    skip = st.get("_non_persistent_buffers_set") or set()
    for name, value in (st.get("_buffers") or {}).items():
      if value is not None and name not in skip:
        out[prefix + name] = np.asarray(value)
    for name, child in (st.get("_modules") or {}).items():
      if child is not None:
        visit(child, prefix + name + ".")

  visit(record, "")
  return out


def params_from_state_dict(state: Dict[str, np.ndarray]) -> dict:
  """Official names -> the Flax tree of models.edm.EDMNet: `model.enc.16x16_conv.weight`
  -> ('model', 'enc_16x16_conv', 'weight'); conv weights OIHW -> HWIO, linear [out, in] ->
  [in, out]. Resampling filters are constants of the architecture and are dropped."""
  flat = {}
  for key, value in state.items():
    parts = key.split(".")
    if parts[-1] == "resample_filter":
      continue
    if len(parts) > 2 and parts[1] in ("enc", "dec"):
      parts = [parts[0], f"{parts[1]}_{parts[2]}"] + parts[3:]
    v = np.asarray(value, np.float32)
    if parts[-1] == "weight" and v.ndim == 4:
      v = v.transpose(2, 3, 1, 0)
    elif parts[-1] == "weight" and v.ndim == 2:
      v = v.T
    flat[tuple(parts)] = v
  return traverse_util.unflatten_dict(flat)


def build_from_kwargs(class_name: str, kwargs: dict):
  """models.edm.EDMNet from an official preconditioner class name and its init kwargs."""
  from score_jax.models import edm  # pylint: disable=g-import-not-at-top
  short = class_name.split(".")[-1]
  if short not in PRECOND_CLASSES:
    raise ValueError(f"the snapshot's network is a {class_name}; expected one of "
                     f"{sorted(PRECOND_CLASSES)}.")
  name = PRECOND_CLASSES[short]
  kw = dict(kwargs)
  kw.pop("use_fp16", None)  # the port computes in float32
  try:
    common = {k: kw.pop(k) for k in ("img_resolution", "img_channels")}
  except KeyError as e:
    raise ValueError(f"the snapshot's {short} kwargs lack {e}; got {sorted(kwargs)}.") from e
  label_dim = kw.pop("label_dim", 0)
  arch = kw.pop("model_type", "DhariwalUNet" if name == "iddpm" else "SongUNet")
  precond_kwargs = {k: kw.pop(k) for k in PRECOND_KWARGS[name] if k in kw}
  for k in ("channel_mult", "attn_resolutions", "resample_filter"):
    if k in kw:
      kw[k] = tuple(kw[k])
  try:
    return edm.build(arch, name, common["img_resolution"], common["img_channels"],
                     label_dim=label_dim, precond_kwargs=precond_kwargs, **kw)
  except TypeError as e:
    raise ValueError(f"the snapshot's {arch} kwargs are not the official ones: {e}") from e


def load_edm_pkl(path: str) -> Tuple[Any, dict]:
  """(model, variables) of a snapshot's EMA network: `model.apply(variables, x, sigma,
  class_labels)` with x float32 NHWC, sigma [B] float32, class_labels one-hot [B, label_dim]
  or None, returns D(x; sigma) NHWC. Works for every network / preconditioner pair the
  official code pickles; torch is not needed."""
  snapshot = read_snapshot(path)
  ema = snapshot["ema"]
  model = build_from_kwargs(ema.class_name, ema.init_kwargs)
  params = params_from_state_dict(state_dict(ema))
  check_params(model, params, path)
  return model, {"params": params}


def check_params(model, params, source: str):
  """Raise ValueError naming the first tensor whose name or shape the rebuilt network does
  not expect."""
  res = model.model.img_resolution
  x = np.zeros((1, res, res, model.img_channels), np.float32)
  labels = np.zeros((1, model.label_dim), np.float32) if model.label_dim else None
  aug = (np.zeros((1, model.model.augment_dim), np.float32)
         if model.model.augment_dim else None)
  want = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, np.ones(1, np.float32),
                                           labels, aug))["params"]
  want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(want).items()}
  got = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(params).items()}
  for k in sorted(set(want) | set(got)):
    if want.get(k) != got.get(k):
      raise ValueError(f"{source}: tensor {'.'.join(k)} has shape {got.get(k)}; the network "
                       f"rebuilt from its kwargs expects {want.get(k)}.")


def dataset_kwargs(path: str) -> dict:
  """The snapshot's dataset_kwargs (resolution, labels, ...) as JSON-safe values."""
  return json.loads(json.dumps(read_snapshot(path).get("dataset_kwargs") or {}, default=str))


# Training-only settings: a snapshot and a config may differ in them and still be one network.
_TRAINING_ONLY = ("dropout", "label_dropout", "parent", "name")


def converter(path: str, ours):
  """`to_params(target) -> (params, None)` for a snapshot's EMA network, which must be `ours`
  (an EDMNet: every architecture and preconditioner setting compared), so that
  `--mode=sample` with that config uses it."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from score_jax.errors import CheckpointMismatchError  # pylint: disable=g-import-not-at-top
  from score_jax.models.edm import EDMNet  # pylint: disable=g-import-not-at-top

  theirs, variables = load_edm_pkl(path)
  if not isinstance(ours, EDMNet):
    raise CheckpointMismatchError(f"{path} holds an EDM network; the config builds a "
                                  f"{type(ours).__name__} (model.name).")

  def fields(module):
    return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
            if f.name not in _TRAINING_ONLY and f.name != "model"}

  pairs = [("", fields(theirs), fields(ours))]
  if type(theirs.model) is not type(ours.model):
    raise CheckpointMismatchError(f"{path} holds a {type(theirs.model).__name__}; the config "
                                  f"builds a {type(ours.model).__name__} (model.arch).")
  pairs.append(("model.", fields(theirs.model), fields(ours.model)))
  norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
  for prefix, a, b in pairs:
    for k in a:
      if norm(a[k]) != norm(b[k]):
        raise CheckpointMismatchError(f"{path}: the snapshot's {prefix}{k}={a[k]!r}; the "
                                      f"config builds {b[k]!r}. Use a config of that network.")
  params = variables["params"]
  return lambda target: (params, None)
