"""libsparse from Python: ctypes over the C ABI (capi/include/sparse/*.h), numpy for host arrays.

    import numpy as np, sparse_ctypes as sp
    ctx = sp.Context("cpu")
    layout = sp.Layout(seq_len=256, block_size=32, num_heads=2,
                       patterns=[sp.Pattern.strided_row(16, head=0),
                                 sp.Pattern.strided_column(16, head=1)])
    q, k, v = (np.random.randn(1, 2, 256, 64).astype(np.float32) for _ in range(3))
    out, lse = sp.attention_forward(ctx, layout, q, k, v)

Library lookup: $SPARSE_LIBRARY (a path to libsparse.so*), else $SPARSE_LIB_DIR/libsparse.so.<MAJOR>,
else the copy installed beside this module by the sparse_attention package (pip install), else the
dynamic loader's search (ctypes.util.find_library("sparse")).

Every failing call raises SparseError(status, message) with the library's status code and its
sparse_last_error() message. Objects own their handles and free them in close() / __del__ / at the
end of a `with` block. Arrays are checked against the shapes before any pointer is handed over.

The model and trainer (model.h: `Model`, `model_config`, `train_config`, checkpoints, sampling)
and the datasets (datasets.h: `Dataset`, `mulaw_encode`/`mulaw_decode`) are bound the same way. A
Model keeps a reference to its Context (and the library keeps the context alive while a model
made on it exists, so closing the context first is safe).

Device memory (the GPU peer benchmarks): `Tensor.from_pointer(ptr, shape, strides, dtype,
memory=MEMORY_DEVICE, device=i)` describes memory this module does not own (e.g. a torch tensor:
`Tensor.from_torch(t)`); pass such descriptors instead of numpy arrays (outputs included).
"""
import ctypes
import ctypes.util
import enum
import math
import operator
import os

try:
    import numpy as np
except ImportError:  # the module still loads; only array helpers need numpy
    np = None

API_VERSION_MAJOR = 0
TENSOR_MAX_DIMS = 8


# ---------------------------------------------------------------- enums (values are stable)

class Status(enum.IntEnum):
    OK = 0
    INVALID_ARGUMENT = -1
    OUT_OF_MEMORY = -2
    UNSUPPORTED = -3
    DEVICE = -4
    IO = -5
    FORMAT = -6
    INTERNAL = -7
    BUFFER_TOO_SMALL = -8


class DType(enum.IntEnum):
    F32 = 0
    F16 = 1
    BF16 = 2
    F64 = 3


class Memory(enum.IntEnum):
    HOST = 0
    DEVICE = 1


class Backend(enum.IntEnum):
    AUTO = 0
    CPU = 1
    CUDA = 2


class PatternKind(enum.IntEnum):
    DENSE = 0
    LOCAL = 1
    STRIDED_ROW = 2
    STRIDED_COLUMN = 3
    FIXED_BLOCK = 4
    FIXED_SUMMARY = 5
    SLIDING_WINDOW = 6
    LONGFORMER = 7
    BIGBIRD = 8


class ModelAttention(enum.IntEnum):
    DENSE = 0
    STRIDED = 1
    FIXED = 2


class HeadMode(enum.IntEnum):
    INTERLEAVED = 0
    MERGED = 1
    MULTIHEAD = 2


class RowAttention(enum.IntEnum):
    """Row heads of strided attention: the paper's formula (l + 1 keys) or OpenAI's local (l)."""
    STRIDED = 0
    LOCAL = 1


class Optimizer(enum.IntEnum):
    ADAM = 0
    ADAMW = 1


class DatasetKind(enum.IntEnum):
    SYNTHETIC_IMAGE = 0
    SYNTHETIC_TEXT = 1
    CIFAR10 = 2
    ENWIK8 = 3
    TEXT = 4
    IMAGENET64 = 5
    AUDIO = 6


class Split(enum.IntEnum):
    TRAIN = 0
    VALID = 1
    TEST = 2


class TokenType(enum.IntEnum):
    U8 = 0
    I32 = 1


MEMORY_HOST, MEMORY_DEVICE = Memory.HOST, Memory.DEVICE


class SparseError(Exception):
    """A failing libsparse call: `status` (Status or int) and the library's message."""

    def __init__(self, status, message):
        try:
            status = Status(status)
        except ValueError:
            pass
        self.status = status
        self.message = message
        name = status.name if isinstance(status, Status) else str(status)
        super().__init__(f"{name} ({int(status)}): {message}")


# ---------------------------------------------------------------- structs (exact C layouts)

_enum = ctypes.c_int  # C enums of the API are int-sized (checked by the tests against the ABI)


class Tensor(ctypes.Structure):
    """sparse_tensor: a caller-owned descriptor (pointer, shape, element strides, dtype)."""
    _fields_ = [("data", ctypes.c_void_p), ("dtype", _enum), ("memory", _enum),
                ("device", ctypes.c_int32), ("ndim", ctypes.c_int32),
                ("shape", ctypes.c_int64 * TENSOR_MAX_DIMS),
                ("strides", ctypes.c_int64 * TENSOR_MAX_DIMS)]

    @classmethod
    def from_pointer(cls, ptr, shape, strides=None, dtype=DType.F32, memory=Memory.HOST,
                     device=0):
        """Describes memory owned elsewhere (host or device). `strides` are in elements; None
        means row-major. The caller keeps the memory alive while the descriptor is used."""
        shape = [int(s) for s in shape]
        if not 1 <= len(shape) <= TENSOR_MAX_DIMS:
            raise ValueError(f"ndim {len(shape)} outside [1, {TENSOR_MAX_DIMS}]")
        if strides is None:
            strides, acc = [0] * len(shape), 1
            for i in range(len(shape) - 1, -1, -1):
                strides[i] = acc
                acc *= max(shape[i], 1)
        strides = [int(s) for s in strides]
        if len(strides) != len(shape):
            raise ValueError("strides and shape differ in length")
        if any(s < 0 for s in shape) or any(s < 0 for s in strides):
            raise ValueError(f"negative shape {shape} or strides {strides}")
        t = cls()
        t.data = ptr
        t.dtype, t.memory, t.device, t.ndim = int(dtype), int(memory), int(device), len(shape)
        for i, (n, s) in enumerate(zip(shape, strides)):
            t.shape[i], t.strides[i] = n, s
        t._owner = None
        return t

    @classmethod
    def from_array(cls, a, writable=False):
        """Describes a numpy array (keeps a reference to it). Raises ValueError for dtypes the
        ABI lacks, negative or misaligned strides, or a read-only array given as an output."""
        if np is None:
            raise ImportError("numpy is needed for Tensor.from_array")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"expected a numpy array, got {type(a).__name__}")
        dtypes = {np.dtype(np.float32): DType.F32, np.dtype(np.float64): DType.F64,
                  np.dtype(np.float16): DType.F16}
        if a.dtype not in dtypes:
            raise ValueError(f"dtype {a.dtype} has no sparse_dtype (float32, float64, float16)")
        if writable and not a.flags.writeable:
            raise ValueError("output array is read-only")
        item = a.itemsize
        if any(s % item for s in a.strides) or any(s < 0 for s in a.strides):
            raise ValueError(f"byte strides {a.strides} are negative or not multiples of the "
                             f"element size {item}")
        t = cls.from_pointer(a.ctypes.data if a.size else None, a.shape,
                             [s // item for s in a.strides], dtypes[a.dtype])
        t._owner = a
        return t

    @classmethod
    def from_torch(cls, t):
        """Describes a torch tensor without importing torch (duck-typed: data_ptr(), stride(),
        shape, dtype, is_cuda, device.index). The tensor must stay alive while used. A dtype
        without a sparse_dtype (integers, bool) raises SparseError (UNSUPPORTED)."""
        names = {"torch.float32": DType.F32, "torch.float16": DType.F16,
                 "torch.bfloat16": DType.BF16, "torch.float64": DType.F64}
        dtype = names.get(str(t.dtype))
        if dtype is None:  # the operator's documented error for a dtype it cannot compute
            raise SparseError(Status.UNSUPPORTED, f"dtype {t.dtype} has no sparse_dtype (float32, "
                              "float16, bfloat16, float64)")
        cuda = bool(getattr(t, "is_cuda", False))
        index = getattr(getattr(t, "device", None), "index", None)
        d = cls.from_pointer(t.data_ptr(), tuple(t.shape), tuple(t.stride()), dtype,
                             Memory.DEVICE if cuda else Memory.HOST, index or 0)
        d._owner = t
        return d


class Settings(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("backend", _enum),
                ("num_threads", ctypes.c_int32), ("device_index", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("cuda_stream", ctypes.c_void_p),
                ("reserved", ctypes.c_uint8 * 64)]


class PatternStruct(ctypes.Structure):
    """sparse_pattern (the raw struct; see Pattern for the Python-side description)."""
    _fields_ = [("kind", _enum), ("head", ctypes.c_int32), ("window", ctypes.c_int64),
                ("stride", ctypes.c_int64), ("summary", ctypes.c_int64),
                ("summary_variants", ctypes.c_int32), ("causal", ctypes.c_int32),
                ("global_tokens", ctypes.POINTER(ctypes.c_int64)),
                ("num_global_tokens", ctypes.c_int64), ("random_blocks", ctypes.c_int64),
                ("seed", ctypes.c_uint64)]


class LayoutDesc(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("seq_len", ctypes.c_int64),
                ("block_size", ctypes.c_int32), ("num_heads", ctypes.c_int32),
                ("patterns", ctypes.POINTER(PatternStruct)), ("num_patterns", ctypes.c_int32),
                ("pattern_struct_size", ctypes.c_uint32),
                ("transpose_strided_column", ctypes.c_int32), ("reserved", ctypes.c_uint8 * 60)]


class LayoutStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("seq_len", ctypes.c_int64),
                ("block_size", ctypes.c_int32), ("num_heads", ctypes.c_int32),
                ("transposed", ctypes.c_int32), ("num_blocks", ctypes.c_int64),
                ("nnz_blocks", ctypes.c_int64), ("full_blocks", ctypes.c_int64),
                ("dense_blocks", ctypes.c_int64), ("useful_elements", ctypes.c_int64),
                ("computed_elements", ctypes.c_int64), ("density", ctypes.c_double),
                ("effective_density", ctypes.c_double), ("memory_bytes", ctypes.c_size_t)]


ATTENTION_FUSED, ATTENTION_UNFUSED = 0, 1  # sparse_attention_algorithm


class AttentionParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("scale", ctypes.c_float),
                ("algorithm", ctypes.c_int32), ("reserved", ctypes.c_uint8 * 56)]


class ModelConfig(ctypes.Structure):
    """sparse_model_config (model.h). Fill with model_config()."""
    _fields_ = [("struct_size", ctypes.c_uint32), ("seq_len", ctypes.c_int64),
                ("num_layers", ctypes.c_int32), ("d_model", ctypes.c_int32),
                ("num_heads", ctypes.c_int32), ("attention", _enum), ("head_mode", _enum),
                ("stride", ctypes.c_int64), ("summary", ctypes.c_int64),
                ("block_size", ctypes.c_int32), ("layer_cycle", ctypes.c_char * 16),
                ("half_qk", ctypes.c_int32), ("half_ff", ctypes.c_int32),
                ("dropout", ctypes.c_float), ("tied_embeddings", ctypes.c_int32),
                ("num_position_dims", ctypes.c_int32), ("position_shape", ctypes.c_int64 * 4),
                ("recompute", ctypes.c_int32), ("seed", ctypes.c_uint64),
                ("output_init_std", ctypes.c_float), ("row_attention", _enum),
                ("summary_variants", ctypes.c_int32), ("reserved", ctypes.c_uint8 * 52)]


class TrainConfig(ctypes.Structure):
    """sparse_train_config (model.h). Fill with train_config()."""
    _fields_ = [("struct_size", ctypes.c_uint32), ("optimizer", _enum),
                ("learning_rate", ctypes.c_float), ("beta1", ctypes.c_float),
                ("beta2", ctypes.c_float), ("epsilon", ctypes.c_float),
                ("weight_decay", ctypes.c_float), ("warmup_steps", ctypes.c_int64),
                ("total_steps", ctypes.c_int64), ("clip_norm", ctypes.c_float),
                ("micro_batch", ctypes.c_int32), ("dtype", _enum),
                ("loss_scale", ctypes.c_float), ("loss_scale_window", ctypes.c_int32),
                ("reserved", ctypes.c_uint8 * 52)]


class TrainStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("step", ctypes.c_int64),
                ("loss", ctypes.c_double), ("bits_per_dim", ctypes.c_double),
                ("grad_norm", ctypes.c_double), ("learning_rate", ctypes.c_double),
                ("tokens", ctypes.c_int64), ("seconds", ctypes.c_double),
                ("peak_activation_bytes", ctypes.c_int64), ("loss_scale", ctypes.c_double),
                ("skipped_steps", ctypes.c_int64)]


class SampleParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("temperature", ctypes.c_float),
                ("seed", ctypes.c_uint64), ("reserved", ctypes.c_uint8 * 32)]


class DatasetDesc(ctypes.Structure):
    """sparse_dataset_desc (datasets.h)."""
    _fields_ = [("struct_size", ctypes.c_uint32), ("kind", _enum), ("path", ctypes.c_char_p),
                ("split", _enum), ("seq_len", ctypes.c_int64), ("seed", ctypes.c_uint64),
                ("shuffle", ctypes.c_int32), ("vocab", ctypes.c_int32),
                ("num_sequences", ctypes.c_int64), ("image_width", ctypes.c_int32),
                ("image_height", ctypes.c_int32), ("noise_scale", ctypes.c_double),
                ("copy_offset", ctypes.c_int64), ("copy_prob", ctypes.c_double),
                ("successor_bias", ctypes.c_double), ("sample_rate", ctypes.c_int32),
                ("reserved0", ctypes.c_int32), ("valid_fraction", ctypes.c_double),
                ("test_fraction", ctypes.c_double), ("reserved", ctypes.c_uint8 * 64)]


# The structs above by C name (the tests compare them with the compiled headers).
STRUCTS = {"sparse_tensor": Tensor, "sparse_settings": Settings, "sparse_pattern": PatternStruct,
           "sparse_layout_desc": LayoutDesc, "sparse_layout_stats": LayoutStats,
           "sparse_attention_params": AttentionParams, "sparse_model_config": ModelConfig,
           "sparse_train_config": TrainConfig, "sparse_train_stats": TrainStats,
           "sparse_sample_params": SampleParams, "sparse_dataset_desc": DatasetDesc}

# ---------------------------------------------------------------- prototypes

_P = ctypes.POINTER
_c, _i32, _i64, _sz = ctypes.c_char_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_size_t
_vp, _u8p = ctypes.c_void_p, _P(ctypes.c_uint8)
_st = _enum  # sparse_status

# name -> (restype, argtypes). Opaque handles are void pointers; kept in step with the headers
# by test_sparse_ctypes.py (every declared function is bound, with its arity).
PROTOTYPES = {
    "sparse_status_string": (_c, [_enum]),
    "sparse_last_error": (_c, []),
    "sparse_clear_error": (None, []),
    "sparse_api_version": (ctypes.c_uint32, []),
    "sparse_version_string": (_c, []),
    "sparse_build_info": (_c, []),
    "sparse_tensor_contiguous": (_st, [_P(Tensor), _vp, _enum, _i32, _P(_i64)]),
    "sparse_dtype_size": (_sz, [_enum]),
    "sparse_backend_name": (_c, [_enum]),
    "sparse_backend_from_name": (_st, [_c, _P(_enum)]),
    "sparse_backend_available": (_st, [_enum, _P(ctypes.c_int)]),
    "sparse_cuda_device_count": (_st, [_P(ctypes.c_int)]),
    "sparse_settings_default": (_st, [_P(Settings)]),
    "sparse_context_create": (_st, [_P(Settings), _P(_vp)]),
    "sparse_context_destroy": (None, [_vp]),
    "sparse_context_backend": (_st, [_vp, _P(_enum)]),
    "sparse_context_num_threads": (_st, [_vp, _P(_i32)]),
    "sparse_context_synchronize": (_st, [_vp]),
    "sparse_context_alloc": (_st, [_vp, _sz, _P(_vp)]),
    "sparse_context_free": (None, [_vp, _vp]),
    "sparse_context_memory": (_st, [_vp, _P(_enum)]),
    "sparse_context_copy": (_st, [_vp, _vp, _enum, _vp, _enum, _sz]),
    "sparse_pattern_kind_name": (_c, [_enum]),
    "sparse_pattern_kind_from_name": (_st, [_c, _P(_enum)]),
    "sparse_pattern_default": (_st, [_P(PatternStruct), _enum]),
    "sparse_layout_desc_default": (_st, [_P(LayoutDesc)]),
    "sparse_layout_create": (_st, [_P(LayoutDesc), _P(_vp)]),
    "sparse_layout_create_from_blocks": (_st, [_i64, _i32, _i32, _u8p, _u8p, _i32, _P(_vp)]),
    "sparse_layout_destroy": (None, [_vp]),
    "sparse_layout_get_stats": (_st, [_vp, _i32, _P(LayoutStats)]),
    "sparse_layout_block_mask": (_st, [_vp, _i32, _u8p, _sz]),
    "sparse_layout_row_mask": (_st, [_vp, _i32, _i64, _u8p, _sz]),
    "sparse_attention_params_default": (_st, [_P(AttentionParams)]),
    "sparse_attention_forward": (_st, [_vp, _vp, _P(AttentionParams)] + [_P(Tensor)] * 5),
    "sparse_attention_backward": (_st, [_vp, _vp, _P(AttentionParams)] + [_P(Tensor)] * 9),
    "sparse_attention_workspace_size": (_st, [_vp, _vp, _i64, _i64, _i32, _P(_sz)]),
    "sparse_attention_workspace_size_params": (_st, [_vp, _vp, _P(AttentionParams), _i64, _i64,
                                                     _i32, _P(_sz)]),
    # model.h
    "sparse_model_config_default": (_st, [_P(ModelConfig)]),
    "sparse_model_config_preset": (_st, [_c, _P(ModelConfig)]),
    "sparse_model_config_parameter_count": (_st, [_P(ModelConfig), _P(_i64)]),
    "sparse_train_config_default": (_st, [_P(TrainConfig)]),
    "sparse_model_create": (_st, [_vp, _P(ModelConfig), _P(TrainConfig), _P(_vp)]),
    "sparse_model_destroy": (None, [_vp]),
    "sparse_model_parameter_count": (_st, [_vp, _P(_i64)]),
    "sparse_model_get_config": (_st, [_vp, _P(ModelConfig)]),
    "sparse_model_get_train_config": (_st, [_vp, _P(TrainConfig)]),
    "sparse_model_step": (_st, [_vp, _P(_i64)]),
    "sparse_model_train_step": (_st, [_vp, _u8p, _i64, _P(TrainStats)]),
    "sparse_model_evaluate": (_st, [_vp, _u8p, _i64, _P(ctypes.c_double)]),
    "sparse_model_token_bits": (_st, [_vp, _u8p, _i64, _P(ctypes.c_double), _sz]),
    "sparse_model_measure_memory": (_st, [_vp, _u8p, _i64, _P(_i64)]),
    "sparse_sample_params_default": (_st, [_P(SampleParams)]),
    "sparse_model_sample": (_st, [_vp, _P(SampleParams), _u8p, _i64, _u8p, _i64]),
    "sparse_model_save": (_st, [_vp, _c]),
    "sparse_model_load": (_st, [_vp, _c, _P(_vp)]),
    "sparse_model_restore": (_st, [_vp, _c]),
    "sparse_train_progress_line": (_st, [_P(TrainStats), _i64, ctypes.c_double, _c, _sz]),
    # datasets.h
    "sparse_dataset_kind_name": (_c, [_enum]),
    "sparse_dataset_kind_from_name": (_st, [_c, _P(_enum)]),
    "sparse_dataset_desc_default": (_st, [_P(DatasetDesc), _enum]),
    "sparse_dataset_open": (_st, [_P(DatasetDesc), _P(_vp)]),
    "sparse_dataset_destroy": (None, [_vp]),
    "sparse_dataset_num_sequences": (_st, [_vp, _P(_i64)]),
    "sparse_dataset_seq_len": (_st, [_vp, _P(_i64)]),
    "sparse_dataset_vocab_size": (_st, [_vp, _P(_i32)]),
    "sparse_dataset_read": (_st, [_vp, _i64, _i64, _enum, _vp, _sz]),
    "sparse_dataset_next_batch": (_st, [_vp, _i64, _enum, _vp, _sz, _P(_i64)]),
    "sparse_dataset_position": (_st, [_vp, _P(ctypes.c_uint64), _P(_i64)]),
    "sparse_dataset_seek": (_st, [_vp, ctypes.c_uint64, _i64]),
    "sparse_dataset_label": (_st, [_vp, _i64, _P(_i32)]),
    "sparse_dataset_entropy": (_st, [_vp, _P(ctypes.c_double), _P(ctypes.c_double)]),
    "sparse_mulaw_encode": (_st, [_P(ctypes.c_float), _sz, _u8p]),
    "sparse_mulaw_decode": (_st, [_u8p, _sz, _P(ctypes.c_float)]),
    "sparse_dataset_audio_supported": (ctypes.c_int, []),
}
# Functions of headers a library build may lack (bound when present): an older library without
# the model or the dataset API still loads for attention.
OPTIONAL_PREFIXES = ("sparse_model_", "sparse_train_", "sparse_sample_", "sparse_dataset_",
                     "sparse_mulaw_")

_lib = None


def _candidates():
    env = os.environ.get("SPARSE_LIBRARY")
    if env:
        return [env]
    d = os.environ.get("SPARSE_LIB_DIR")
    if d:
        return [os.path.join(d, f"libsparse.so.{API_VERSION_MAJOR}"),
                os.path.join(d, "libsparse.so")]
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           f"libsparse.so.{API_VERSION_MAJOR}")
    if os.path.exists(bundled):
        return [bundled]
    found = ctypes.util.find_library("sparse")
    return [found] if found else [f"libsparse.so.{API_VERSION_MAJOR}"]


def library():
    """The loaded ctypes.CDLL, with restype/argtypes set from PROTOTYPES."""
    global _lib
    if _lib is None:
        errors = []
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                break
            except OSError as e:
                errors.append(f"{path}: {e}")
        else:
            raise OSError("cannot load libsparse (set SPARSE_LIBRARY or SPARSE_LIB_DIR): " +
                          "; ".join(errors))
        for name, (res, args) in PROTOTYPES.items():
            try:
                f = getattr(lib, name)
            except AttributeError:
                if name.startswith(OPTIONAL_PREFIXES):
                    continue
                raise
            f.restype, f.argtypes = res, args
        major = lib.sparse_api_version() >> 16
        if major != API_VERSION_MAJOR:
            raise OSError(f"libsparse API major version {major}, this module speaks "
                          f"{API_VERSION_MAJOR}")
        _lib = lib
    return _lib


def last_error():
    return library().sparse_last_error().decode("utf-8", "replace")


def check(status):
    """Raises SparseError for a non-zero status, with sparse_last_error()'s message."""
    if status != 0:
        raise SparseError(status, last_error())


def version():
    return library().sparse_version_string().decode()


def api_version():
    return library().sparse_api_version()


def build_info():
    return library().sparse_build_info().decode()


def status_string(status):
    return library().sparse_status_string(int(status)).decode()


def backend_available(backend):
    backend = _backend_value(backend)
    avail = ctypes.c_int()
    check(library().sparse_backend_available(backend, ctypes.byref(avail)))
    return bool(avail.value)


def cuda_device_count():
    n = ctypes.c_int()
    check(library().sparse_cuda_device_count(ctypes.byref(n)))
    return n.value


def _backend_value(backend):
    if isinstance(backend, str):
        out = _enum()
        check(library().sparse_backend_from_name(backend.encode(), ctypes.byref(out)))
        return out.value
    return int(backend)


class _Handle:
    _destroy = None

    def __init__(self):
        self._h = None

    def close(self):
        if self._h:
            getattr(library(), self._destroy)(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # A copy would own the same library handle: both would destroy it (a double free). Layouts,
    # which never change, are shared instead (see Layout).
    def __copy__(self):
        raise TypeError(f"a {type(self).__name__} owns a library handle and cannot be copied")

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} (a library handle) cannot be pickled")

    @property
    def handle(self):
        if not self._h:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._h


class Context(_Handle):
    """sparse_context: a backend ("auto", "cpu", "cuda" or Backend), threads (0 = all), seed."""
    _destroy = "sparse_context_destroy"

    def __init__(self, backend="auto", num_threads=0, device_index=0, seed=None,
                 cuda_stream=None):
        super().__init__()
        s = Settings()
        check(library().sparse_settings_default(ctypes.byref(s)))
        s.backend = _backend_value(backend)
        s.num_threads = _c_int("num_threads", num_threads, 32)
        s.device_index = _c_int("device_index", device_index, 32)
        if seed is not None:
            s.seed = _c_int("seed", seed, 64, signed=False)
        if cuda_stream is not None:
            s.cuda_stream = cuda_stream
        h = ctypes.c_void_p()
        check(library().sparse_context_create(ctypes.byref(s), ctypes.byref(h)))
        self._h = h
        self._device_index = device_index
        # Buffers hold memory of this context, which must be freed before the context is
        # destroyed: close() with buffers still open defers the destroy to the last one's close.
        self._open_buffers = 0
        self._closing = None

    def close(self):
        if self._h and self._open_buffers:
            self._closing, self._h = self._h, None
            return
        super().close()

    def _buffer_freed(self):
        self._open_buffers -= 1
        if self._open_buffers == 0 and self._closing:
            library().sparse_context_destroy(self._closing)
            self._closing = None

    @property
    def backend(self):
        out = _enum()
        check(library().sparse_context_backend(self.handle, ctypes.byref(out)))
        return Backend(out.value)

    @property
    def num_threads(self):
        out = ctypes.c_int32()
        check(library().sparse_context_num_threads(self.handle, ctypes.byref(out)))
        return out.value

    def synchronize(self):
        check(library().sparse_context_synchronize(self.handle))

    @property
    def memory(self):
        """Where this context computes (Memory.HOST for the CPU backend, DEVICE for CUDA)."""
        out = _enum()
        check(library().sparse_context_memory(self.handle, ctypes.byref(out)))
        return Memory(out.value)

    def alloc(self, nbytes):
        """A Buffer of `nbytes` in the context's memory (freed by Buffer.close())."""
        return Buffer(self, nbytes)

    def empty(self, shape, dtype=DType.F32):
        """(Buffer, Tensor): an uninitialised row-major tensor in the context's memory."""
        n = 1
        for s in shape:
            n *= int(s)
        buf = Buffer(self, n * library().sparse_dtype_size(int(dtype)))
        t = Tensor.from_pointer(buf.ptr, shape, None, dtype, self.memory, self._device_index)
        t._owner = buf
        return buf, t

    def to_context(self, a):
        """(Buffer, Tensor): a copy of numpy array `a` in the context's memory."""
        a = np.ascontiguousarray(a)
        buf, t = self.empty(a.shape, Tensor.from_array(a).dtype)
        buf.copy_from(a)
        return buf, t


class Buffer:
    """Memory from sparse_context_alloc() (device memory on a CUDA context). Keeps its context
    alive (a Context closed first is destroyed when its last Buffer is freed); freed by close(),
    __del__ or the end of a `with` block."""

    def __init__(self, ctx, nbytes):
        # size_t: ctypes would pass -1 as 2**64 - 1, refused as "cannot allocate 16 EiB".
        self.ctx, self.nbytes = ctx, _c_int("nbytes", nbytes, 64, signed=False)
        p = ctypes.c_void_p()
        check(library().sparse_context_alloc(ctx.handle, self.nbytes, ctypes.byref(p)))
        self._p, self._ctx_handle = p, ctx.handle
        if p.value:
            ctx._open_buffers += 1

    @property
    def ptr(self):
        """The address as an int (None for a 0-byte buffer)."""
        return self._p.value

    def close(self):
        """Frees the memory (idempotent). Works after the context's close(), which waits for it."""
        p, self._p = getattr(self, "_p", None), ctypes.c_void_p()
        if p is not None and p.value:
            library().sparse_context_free(self._ctx_handle, p)
            self.ctx._buffer_freed()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __copy__(self):
        # A copy would free the same memory a second time (a double free, and a second count
        # against its context's open buffers).
        raise TypeError("a Buffer owns its memory and cannot be copied: allocate another and "
                        "copy_from() this one's contents")

    def __deepcopy__(self, memo):
        self.__copy__()

    def __reduce__(self):
        raise TypeError("a Buffer (memory of a Context) cannot be pickled")

    def _host(self, a, nbytes):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise ValueError("expected a C-contiguous numpy array")
        if a.nbytes != nbytes:
            raise ValueError(f"array has {a.nbytes} bytes, the buffer {nbytes}")
        return a.ctypes.data

    def copy_from(self, a):
        """Copies a C-contiguous numpy array of exactly nbytes bytes into the buffer."""
        check(library().sparse_context_copy(self.ctx.handle, self.ptr, self.ctx.memory,
                                            self._host(a, self.nbytes), Memory.HOST, self.nbytes))

    def copy_to(self, a):
        """Copies the buffer into a writable C-contiguous numpy array of nbytes bytes."""
        if not a.flags.writeable:
            raise ValueError("destination array is read-only")
        check(library().sparse_context_copy(self.ctx.handle, self._host(a, self.nbytes),
                                            Memory.HOST, self.ptr, self.ctx.memory, self.nbytes))
        return a


def _c_int(name, value, bits, signed=True):
    """`value` as an int that fits the C field `name` (ctypes would wrap it around silently)."""
    try:
        v = operator.index(value)
    except TypeError:
        if not (isinstance(value, float) and value.is_integer()):
            raise ValueError(f"{name} = {value!r} is not an integer") from None
        v = int(value)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise ValueError(f"{name} = {v} does not fit the C field ({'int' if signed else 'uint'}"
                         f"{bits}_t, {lo} to {hi})")
    return v


class Pattern:
    """One pattern (layout.h): kind, head (-1 = every head) and the fields the kind reads."""

    def __init__(self, kind, head=-1, window=0, stride=0, summary=0, summary_variants=1,
                 causal=True, global_tokens=(), random_blocks=0, seed=0):
        if isinstance(kind, str):
            out = _enum()
            check(library().sparse_pattern_kind_from_name(kind.encode(), ctypes.byref(out)))
            kind = out.value
        self.kind = PatternKind(kind)
        self.head, self.window, self.stride, self.summary = head, window, stride, summary
        self.summary_variants, self.causal = summary_variants, causal
        self.global_tokens = [int(g) for g in global_tokens]
        self.random_blocks, self.seed = random_blocks, seed

    @classmethod
    def dense(cls, head=-1, causal=True):
        """j <= i (every j when causal is False)."""
        return cls(PatternKind.DENSE, head, causal=causal)

    @classmethod
    def local(cls, window, head=-1):
        return cls(PatternKind.LOCAL, head, window=window)

    @classmethod
    def strided_row(cls, stride, head=-1):
        return cls(PatternKind.STRIDED_ROW, head, stride=stride)

    @classmethod
    def strided_column(cls, stride, head=-1):
        return cls(PatternKind.STRIDED_COLUMN, head, stride=stride)

    @classmethod
    def fixed_block(cls, stride, head=-1):
        return cls(PatternKind.FIXED_BLOCK, head, stride=stride)

    @classmethod
    def fixed_summary(cls, stride, summary, head=-1, summary_variants=1):
        return cls(PatternKind.FIXED_SUMMARY, head, stride=stride, summary=summary,
                   summary_variants=summary_variants)

    @classmethod
    def sliding_window(cls, window, head=-1, causal=True):
        return cls(PatternKind.SLIDING_WINDOW, head, window=window, causal=causal)

    @classmethod
    def longformer(cls, window, global_tokens, head=-1, causal=True):
        return cls(PatternKind.LONGFORMER, head, window=window, causal=causal,
                   global_tokens=global_tokens)

    @classmethod
    def bigbird(cls, window, global_tokens, random_blocks, seed, head=-1, causal=True):
        return cls(PatternKind.BIGBIRD, head, window=window, causal=causal,
                   global_tokens=global_tokens, random_blocks=random_blocks, seed=seed)

    def _to_struct(self, keep):
        p = PatternStruct()
        check(library().sparse_pattern_default(ctypes.byref(p), int(self.kind)))
        p.head = _c_int("head", self.head, 32)
        p.window = _c_int("window", self.window, 64)
        p.stride = _c_int("stride", self.stride, 64)
        p.summary = _c_int("summary", self.summary, 64)
        p.summary_variants = _c_int("summary_variants", self.summary_variants, 32)
        p.causal = int(bool(self.causal))
        if self.global_tokens:
            tokens = [_c_int("global token", g, 64) for g in self.global_tokens]
            arr = (ctypes.c_int64 * len(tokens))(*tokens)
            keep.append(arr)
            p.global_tokens = ctypes.cast(arr, ctypes.POINTER(ctypes.c_int64))
        p.num_global_tokens = len(self.global_tokens)
        p.random_blocks = _c_int("random_blocks", self.random_blocks, 64)
        p.seed = _c_int("seed", self.seed, 64, signed=False)
        return p

    def __repr__(self):
        return f"Pattern({self.kind.name}, head={self.head})"


class Layout(_Handle):
    """sparse_layout built from patterns (see layout.h for the token-level definitions). A layout
    never changes: copy.copy and copy.deepcopy return the same object (a module holding one can be
    deep-copied)."""
    _destroy = "sparse_layout_destroy"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __init__(self, seq_len, patterns, num_heads=1, block_size=64,
                 transpose_strided_column=True):
        super().__init__()
        if isinstance(patterns, Pattern):
            patterns = [patterns]
        d = LayoutDesc()
        check(library().sparse_layout_desc_default(ctypes.byref(d)))
        keep = []
        structs = (PatternStruct * max(len(patterns), 1))(
            *[p._to_struct(keep) for p in patterns])
        d.seq_len = _c_int("seq_len", seq_len, 64)
        d.block_size = _c_int("block_size", block_size, 32)
        d.num_heads = _c_int("num_heads", num_heads, 32)
        d.patterns = ctypes.cast(structs, ctypes.POINTER(PatternStruct)) if patterns else None
        d.num_patterns = len(patterns)
        d.transpose_strided_column = int(bool(transpose_strided_column))
        h = ctypes.c_void_p()
        check(library().sparse_layout_create(ctypes.byref(d), ctypes.byref(h)))
        self._h = h
        self._init(seq_len, num_heads, block_size)

    def _init(self, seq_len, num_heads, block_size):
        self.seq_len, self.num_heads, self.block_size = seq_len, num_heads, block_size

    @classmethod
    def from_blocks(cls, seq_len, block_size, block_mask, element_mask=None, causal=False):
        """block_mask: uint8 array [heads, nb, nb]; element_mask: per computed block (head, I, J
        row-major) block_size x block_size bytes, or None."""
        seq_len, block_size = _c_int("seq_len", seq_len, 64), _c_int("block_size", block_size, 32)
        if block_size < 1:
            raise ValueError(f"block_size = {block_size} must be >= 1 (16, 32, 64 or 128)")
        # Non-zero = computed, as the C API reads it: a cast to uint8 would turn 0.5 or 256 into 0.
        bm = np.ascontiguousarray(np.asarray(block_mask) != 0, dtype=np.uint8)
        if bm.ndim != 3 or bm.shape[1] != bm.shape[2]:
            raise ValueError(f"block_mask must be [heads, nb, nb], got {bm.shape}")
        nb = -(-seq_len // block_size)
        if bm.shape[1] != nb:
            raise ValueError(f"block_mask has {bm.shape[1]} blocks per side, seq_len {seq_len} "
                             f"/ block {block_size} needs {nb}")
        em_ptr = None
        if element_mask is not None:
            em = np.ascontiguousarray(np.asarray(element_mask) != 0, dtype=np.uint8)
            need = int(np.count_nonzero(bm)) * block_size * block_size
            if em.size != need:
                raise ValueError(f"element_mask has {em.size} bytes, the computed blocks need "
                                 f"{need}")
            em_ptr = em.ctypes.data_as(_u8p)
        self = cls.__new__(cls)
        _Handle.__init__(self)
        h = ctypes.c_void_p()
        check(library().sparse_layout_create_from_blocks(
            seq_len, block_size, bm.shape[0], bm.ctypes.data_as(_u8p), em_ptr, int(bool(causal)),
            ctypes.byref(h)))
        self._h = h
        self._init(seq_len, bm.shape[0], block_size)
        return self

    def stats(self, head=-1):
        s = LayoutStats()
        s.struct_size = ctypes.sizeof(LayoutStats)
        check(library().sparse_layout_get_stats(self.handle, head, ctypes.byref(s)))
        return {name: getattr(s, name) for name, _ in LayoutStats._fields_ if name != "struct_size"}

    def block_mask(self, head):
        nb = self.stats(head)["num_blocks"]
        out = np.zeros((nb, nb), dtype=np.uint8)
        check(library().sparse_layout_block_mask(self.handle, head, out.ctypes.data_as(_u8p),
                                                 out.size))
        return out

    def row_mask(self, head, query):
        out = np.zeros(self.seq_len, dtype=np.uint8)
        check(library().sparse_layout_row_mask(self.handle, head, query, out.ctypes.data_as(_u8p),
                                               out.size))
        return out.astype(bool)

    def mask(self, head):
        """The full [seq_len, seq_len] boolean mask of `head` (from row_mask; small n only)."""
        return np.stack([self.row_mask(head, i) for i in range(self.seq_len)])


def _params(scale, algorithm=None):
    if scale is None and algorithm is None:
        return None
    p = AttentionParams()
    check(library().sparse_attention_params_default(ctypes.byref(p)))
    if scale is not None:
        p.scale = scale
    if algorithm is not None:
        p.algorithm = algorithm
    return ctypes.byref(p)


def _desc(x, name, writable=False):
    if isinstance(x, Tensor):
        return x
    if np is not None and isinstance(x, np.ndarray):
        return Tensor.from_array(x, writable=writable)
    raise TypeError(f"{name}: expected a numpy array or a Tensor, got {type(x).__name__}")


def _shape(t):
    return tuple(t.shape[i] for i in range(t.ndim))


def _check_shapes(layout, named4, lse):
    ref = None
    for name, t in named4:
        s = _shape(t)
        if len(s) != 4:
            raise ValueError(f"{name} must be 4-D [batch, heads, seq_len, head_dim], got {s}")
        if ref is None:
            ref = (name, s)
            if s[1] != layout.num_heads or s[2] != layout.seq_len:
                raise ValueError(f"{name} has shape {s}; the layout has {layout.num_heads} heads "
                                 f"and seq_len {layout.seq_len}")
        elif s != ref[1]:
            raise ValueError(f"{name} has shape {s} but {ref[0]} has {ref[1]}")
    if lse is not None and _shape(lse) != ref[1][:3]:
        raise ValueError(f"lse has shape {_shape(lse)}, expected {ref[1][:3]}")
    return ref[1]


def _alloc_dtype(q, name):
    if np is None or not isinstance(q, np.ndarray):
        raise ValueError(f"{name} must be given (a Tensor) when q is a Tensor descriptor")
    return q.dtype


def attention_forward(ctx, layout, q, k, v, out=None, lse=None, scale=None, with_lse=True,
                      algorithm=None):
    """Block-sparse attention forward. q, k, v: [batch, heads, seq_len, head_dim] numpy arrays
    (any non-negative strides) or Tensor descriptors. Returns (out, lse); out and lse are
    allocated as float arrays like q when not given (lse = None when with_lse is False).
    `algorithm`: ATTENTION_FUSED (default) or ATTENTION_UNFUSED."""
    tq, tk, tv = _desc(q, "q"), _desc(k, "k"), _desc(v, "v")
    shape = _check_shapes(layout, [("q", tq), ("k", tk), ("v", tv)], None)
    if out is None:
        out = np.empty(shape, dtype=_alloc_dtype(q, "out"))
    if lse is None and with_lse:
        _alloc_dtype(q, "lse")
        lse = np.empty(shape[:3], dtype=np.float32)
    to = _desc(out, "out", writable=True)
    tl = _desc(lse, "lse", writable=True) if lse is not None else None
    _check_shapes(layout, [("q", tq), ("out", to)], tl)
    check(library().sparse_attention_forward(
        ctx.handle, layout.handle, _params(scale, algorithm), ctypes.byref(tq), ctypes.byref(tk),
        ctypes.byref(tv), ctypes.byref(to), ctypes.byref(tl) if tl is not None else None))
    return out, lse


def attention_backward(ctx, layout, q, k, v, out, lse, dout, dq=None, dk=None, dv=None,
                       scale=None, algorithm=None):
    """Gradients of attention_forward (same scale): returns (dq, dk, dv), allocated when not
    given."""
    tq, tk, tv = _desc(q, "q"), _desc(k, "k"), _desc(v, "v")
    to, tl, tdo = _desc(out, "out"), _desc(lse, "lse"), _desc(dout, "dout")
    shape = _check_shapes(layout, [("q", tq), ("k", tk), ("v", tv), ("out", to), ("dout", tdo)],
                          tl)
    grads = []
    for g, n in zip((dq, dk, dv), ("dq", "dk", "dv")):
        grads.append(np.empty(shape, dtype=_alloc_dtype(q, n)) if g is None else g)
    tdq, tdk, tdv = (_desc(g, n, writable=True) for g, n in zip(grads, ("dq", "dk", "dv")))
    _check_shapes(layout, [("q", tq), ("dq", tdq), ("dk", tdk), ("dv", tdv)], None)
    check(library().sparse_attention_backward(
        ctx.handle, layout.handle, _params(scale, algorithm), *(ctypes.byref(t) for t in
                                                     (tq, tk, tv, to, tl, tdo, tdq, tdk, tdv))))
    return tuple(grads)


def attention_workspace_size(ctx, layout, batch, head_dim, backward=False,
                             algorithm=ATTENTION_FUSED):
    n = ctypes.c_size_t()
    p = AttentionParams()
    check(library().sparse_attention_params_default(ctypes.byref(p)))
    p.algorithm = algorithm
    check(library().sparse_attention_workspace_size_params(ctx.handle, layout.handle,
                                                           ctypes.byref(p), batch, head_dim,
                                                           int(bool(backward)), ctypes.byref(n)))
    return n.value


def default_scale(head_dim):
    return 1.0 / math.sqrt(head_dim)


# ---------------------------------------------------------------- model (model.h)

def _set_fields(struct, fields):
    for name, value in fields.items():
        if name not in dict(type(struct)._fields_) or name in ("struct_size", "reserved"):
            raise AttributeError(f"{type(struct).__name__} has no settable field {name!r}")
        ftype = dict(type(struct)._fields_)[name]
        if name == "layer_cycle" and isinstance(value, str):
            value = value.encode()
        elif issubclass(ftype, ctypes._SimpleCData) and ftype._type_ in "bBhHiIlLqQ":
            # ctypes would store an out-of-range int modulo 2^bits without a word.
            value = _c_int(name, value, 8 * ctypes.sizeof(ftype), ftype(-1).value < 0)
        elif name == "position_shape":
            value = list(value)
            if not 1 <= len(value) <= 4:
                raise ValueError(f"position_shape needs 1 to 4 sizes, got {len(value)}")
            # A list sets the number of tables too, unless num_position_dims is given.
            if "num_position_dims" not in fields:
                struct.num_position_dims = len(value)
            value = (ctypes.c_int64 * 4)(*(value + [0] * (4 - len(value))))
        setattr(struct, name, value)
    return struct


def model_config(preset=None, **fields):
    """A ModelConfig from sparse_model_config_default() or a named preset ("cifar10",
    "enwik8-small", ...), then `fields` (layer_cycle may be a str, position_shape a list)."""
    c = ModelConfig()
    if preset is None:
        check(library().sparse_model_config_default(ctypes.byref(c)))
    else:
        check(library().sparse_model_config_preset(preset.encode(), ctypes.byref(c)))
    return _set_fields(c, fields)


def train_config(**fields):
    """A TrainConfig from sparse_train_config_default(), then `fields`."""
    t = TrainConfig()
    check(library().sparse_train_config_default(ctypes.byref(t)))
    return _set_fields(t, fields)


def parameter_count(config):
    n = ctypes.c_int64()
    check(library().sparse_model_config_parameter_count(ctypes.byref(config), ctypes.byref(n)))
    return n.value


def _stats_dict(s):
    return {name: getattr(s, name) for name, _ in TrainStats._fields_ if name != "struct_size"}


def progress_line(stats, total_steps=0, elapsed_seconds=0.0):
    """sparse_train_progress_line() for a stats dict from Model.train_step()."""
    s = TrainStats(struct_size=ctypes.sizeof(TrainStats), **stats)
    buf = ctypes.create_string_buffer(512)
    check(library().sparse_train_progress_line(ctypes.byref(s), total_steps, elapsed_seconds, buf,
                                               len(buf)))
    return buf.value.decode()


def _path(path, what):
    """`path` (str, bytes or os.PathLike) as the C string the library reads, refusing NUL bytes
    (ctypes would cut the path at the first one and the file would go elsewhere)."""
    p = os.fsencode(path)
    if b"\0" in p:
        raise ValueError(f"{what} {path!r} contains a NUL byte")
    return p


def _tokens(tokens, seq_len):
    a = np.asarray(tokens)
    if a.dtype != np.uint8:
        # Tokens are bytes: a cast would wrap 300 to 44 and cut 3.7 to 3 without a word.
        if a.dtype.kind not in "iu":
            raise ValueError(f"tokens must be bytes (uint8, or integers in [0, 255]), got dtype "
                             f"{a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"tokens must be in [0, 255] (bytes), got values from {a.min()} to "
                             f"{a.max()}")
    t = np.ascontiguousarray(a, dtype=np.uint8)
    if t.ndim == 1:
        t = t.reshape(1, -1)
    if t.ndim != 2 or t.shape[1] != seq_len or t.shape[0] < 1:
        raise ValueError(f"tokens must be [batch, seq_len = {seq_len}] bytes, got shape "
                         f"{np.shape(tokens)}")
    return t, t.shape[0]


class Model(_Handle):
    """sparse_model: the Sparse Transformer with its trainer. Keeps its Context alive."""
    _destroy = "sparse_model_destroy"

    def __init__(self, ctx, config=None, train=None):
        super().__init__()
        self.ctx = ctx
        if config is None:
            config = model_config()
        h = ctypes.c_void_p()
        check(library().sparse_model_create(ctx.handle, ctypes.byref(config),
                                            ctypes.byref(train) if train is not None else None,
                                            ctypes.byref(h)))
        self._h = h
        self.seq_len = config.seq_len

    @classmethod
    def load(cls, ctx, path):
        """A model from a checkpoint written by save()."""
        self = cls.__new__(cls)
        _Handle.__init__(self)
        self.ctx = ctx
        h = ctypes.c_void_p()
        check(library().sparse_model_load(ctx.handle, _path(path, "checkpoint"), ctypes.byref(h)))
        self._h = h
        self.seq_len = self.config.seq_len
        return self

    @property
    def config(self):
        c = ModelConfig()
        check(library().sparse_model_get_config(self.handle, ctypes.byref(c)))
        return c

    @property
    def train_config(self):
        t = TrainConfig()
        check(library().sparse_model_get_train_config(self.handle, ctypes.byref(t)))
        return t

    @property
    def parameter_count(self):
        n = ctypes.c_int64()
        check(library().sparse_model_parameter_count(self.handle, ctypes.byref(n)))
        return n.value

    @property
    def step(self):
        n = ctypes.c_int64()
        check(library().sparse_model_step(self.handle, ctypes.byref(n)))
        return n.value

    def train_step(self, tokens):
        """One optimiser step on uint8 tokens [batch, seq_len]; returns the stats as a dict."""
        t, batch = _tokens(tokens, self.seq_len)
        s = TrainStats(struct_size=ctypes.sizeof(TrainStats))
        check(library().sparse_model_train_step(self.handle, t.ctypes.data_as(_u8p), batch,
                                                ctypes.byref(s)))
        return _stats_dict(s)

    def evaluate(self, tokens):
        """Mean bits per dim on uint8 tokens [batch, seq_len] (no dropout, model unchanged)."""
        t, batch = _tokens(tokens, self.seq_len)
        bpd = ctypes.c_double()
        check(library().sparse_model_evaluate(self.handle, t.ctypes.data_as(_u8p), batch,
                                              ctypes.byref(bpd)))
        return bpd.value

    def token_bits(self, tokens):
        """Bits of each token given the earlier ones of its sequence: float64 [batch, seq_len]
        (their mean is evaluate(tokens))."""
        t, batch = _tokens(tokens, self.seq_len)
        bits = np.zeros(t.shape, np.float64)
        check(library().sparse_model_token_bits(
            self.handle, t.ctypes.data_as(_u8p), batch,
            bits.ctypes.data_as(_P(ctypes.c_double)), bits.size))
        return bits

    def measure_memory(self, tokens):
        t, batch = _tokens(tokens, self.seq_len)
        n = ctypes.c_int64()
        check(library().sparse_model_measure_memory(self.handle, t.ctypes.data_as(_u8p), batch,
                                                    ctypes.byref(n)))
        return n.value

    def sample(self, length, prompt=b"", temperature=None, seed=None):
        """`length` bytes: the prompt, then sampled continuation (temperature 0 = greedy)."""
        p = SampleParams()
        check(library().sparse_sample_params_default(ctypes.byref(p)))
        if temperature is not None:
            p.temperature = temperature
        if seed is not None:
            p.seed = _c_int("seed", seed, 64, signed=False)
        length = _c_int("length", length, 64)
        prompt = bytes(prompt)
        # A length outside [1, seq_len] is refused by the library before it writes anything: the
        # buffer need not be allocated for it (2**40 bytes would be a MemoryError instead).
        out = (ctypes.c_uint8 * max(min(length, self.seq_len), 1))()
        pr = (ctypes.c_uint8 * max(len(prompt), 1)).from_buffer_copy(prompt.ljust(1, b"\0"))
        check(library().sparse_model_sample(self.handle, ctypes.byref(p),
                                            ctypes.cast(pr, _u8p) if prompt else None,
                                            len(prompt), ctypes.cast(out, _u8p), int(length)))
        return bytes(out[:length])

    def save(self, path):
        check(library().sparse_model_save(self.handle, _path(path, "checkpoint")))

    def restore(self, path):
        check(library().sparse_model_restore(self.handle, _path(path, "checkpoint")))


# ---------------------------------------------------------------- datasets (datasets.h)

def _kind_value(kind):
    if isinstance(kind, str):
        out = _enum()
        check(library().sparse_dataset_kind_from_name(kind.encode(), ctypes.byref(out)))
        return out.value
    return int(kind)


_TOKEN_DTYPES = {TokenType.U8: "uint8", TokenType.I32: "int32"}


def _token_type(dtype):
    dt = np.dtype(dtype)
    for t, name in _TOKEN_DTYPES.items():
        if dt == np.dtype(name):
            return t, dt
    raise ValueError(f"tokens are uint8 or int32, not {dt}")


class Dataset(_Handle):
    """sparse_dataset: a split of fixed-length token sequences (see datasets.h)."""
    _destroy = "sparse_dataset_destroy"

    def __init__(self, kind, path=None, split=Split.TRAIN, **fields):
        super().__init__()
        d = DatasetDesc()
        check(library().sparse_dataset_desc_default(ctypes.byref(d), _kind_value(kind)))
        self._path = _path(path, "dataset path") if path is not None else None
        d.path = self._path
        if isinstance(split, str):
            if split.upper() not in Split.__members__:
                raise ValueError(f"split {split!r} is not one of "
                                 f"{', '.join(s.lower() for s in Split.__members__)}")
            split = Split[split.upper()]
        d.split = _c_int("split", split, 32)
        _set_fields(d, fields)
        h = ctypes.c_void_p()
        check(library().sparse_dataset_open(ctypes.byref(d), ctypes.byref(h)))
        self._h = h

    def _get(self, fn, ctype):
        out = ctype()
        check(getattr(library(), fn)(self.handle, ctypes.byref(out)))
        return out.value

    @property
    def num_sequences(self):
        return self._get("sparse_dataset_num_sequences", ctypes.c_int64)

    @property
    def seq_len(self):
        return self._get("sparse_dataset_seq_len", ctypes.c_int64)

    @property
    def vocab_size(self):
        return self._get("sparse_dataset_vocab_size", ctypes.c_int32)

    def __len__(self):
        return self.num_sequences

    def read(self, first, count, dtype=np.uint8):
        """Sequences [first, first + count) as an array [count, seq_len]."""
        t, dt = _token_type(dtype)
        out = np.empty((int(count), self.seq_len), dt)
        check(library().sparse_dataset_read(self.handle, first, count, int(t),
                                            out.ctypes.data, out.nbytes))
        return out

    def next_batch(self, batch_size, dtype=np.uint8):
        """(tokens [batch_size, seq_len], indices) of the next batch of the seeded order."""
        t, dt = _token_type(dtype)
        out = np.empty((int(batch_size), self.seq_len), dt)
        idx = np.empty(int(batch_size), np.int64)
        check(library().sparse_dataset_next_batch(
            self.handle, batch_size, int(t), out.ctypes.data, out.nbytes,
            idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))))
        return out, idx

    @property
    def position(self):
        """(epoch, sequences of it already served)."""
        e, p = ctypes.c_uint64(), ctypes.c_int64()
        check(library().sparse_dataset_position(self.handle, ctypes.byref(e), ctypes.byref(p)))
        return e.value, p.value

    def seek(self, epoch, position):
        check(library().sparse_dataset_seek(self.handle, epoch, position))

    def label(self, index):
        out = ctypes.c_int32()
        check(library().sparse_dataset_label(self.handle, index, ctypes.byref(out)))
        return out.value

    def entropy(self):
        """Synthetic kinds: (exact entropy, mean -log2 p of the drawn tokens), bits per token."""
        a, b = ctypes.c_double(), ctypes.c_double()
        check(library().sparse_dataset_entropy(self.handle, ctypes.byref(a), ctypes.byref(b)))
        return a.value, b.value


def mulaw_encode(x):
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.shape, np.uint8)
    check(library().sparse_mulaw_encode(x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), x.size,
                                        out.ctypes.data_as(_u8p)))
    return out


def mulaw_decode(q):
    q = np.ascontiguousarray(q, np.uint8)
    out = np.empty(q.shape, np.float32)
    check(library().sparse_mulaw_decode(q.ctypes.data_as(_u8p), q.size,
                                        out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))))
    return out


def audio_supported():
    return bool(library().sparse_dataset_audio_supported())
